"""`moodstream dataset build`: sources → labelled REMI token shards, an index, the tokenizer and stats.

`build(BuildConfig) -> dict` (the stats). Pieces are planned by the source adapters, cut into chunks of
`chunk_size` and tokenized by worker processes; each finished chunk is one shard `shards/NNNNN-<hash>.npy`
(uint16 ids, REMI only: the conditioning block is the sampler's job) plus its index part `.jsonl`, both
written to a temp name and renamed, the `.jsonl` last. A chunk whose two files exist is done: re-running
(after Ctrl-C, a crash or with more sources) redoes only missing chunks. At the end `index.jsonl`,
`tokenizer.json`, `stats.json` and `stats.md` are written the same way and stale chunks are removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import signal
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from model.errors import MoodstreamError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SHARD_DIR = "shards"
INDEX_FILE = "index.jsonl"
TOKENIZER_FILE = "tokenizer.json"
STATS_JSON = "stats.json"
STATS_MD = "stats.md"
MAX_PIECE_MINUTES = 30.0  # longer files are "absurd" and skipped
MIN_GENRE_PIECES = 200  # a genre the data backs has at least this many pieces ...
MIN_GENRE_TOKENS = 500_000  # ... and tokens


@dataclass(frozen=True)
class BuildConfig:
    out_dir: Path
    sources: tuple[str, ...]
    data_root: Path
    workers: int = 2  # tokenizing processes (1 = in this process)
    seed: int = 0  # drives the generated arrangements
    mma_pieces: int = 3600  # generated arrangements (≥ 3,000 for the default corpus)
    midicaps: Path | None = None  # MidiCaps JSON-lines file (source `midicaps`)
    lakh_root: Path | None = None  # folder holding lmd_full/ (source `midicaps`)
    limit: int = 0  # > 0: at most this many pieces per source (quick test builds)
    chunk_size: int = 32  # pieces per shard (the unit of resuming)
    progress: bool = True  # tqdm bar on stderr

    def __post_init__(self):
        from training.sources import SOURCES

        if not self.sources:
            raise MoodstreamError("no sources given: pass --sources, e.g. --sources emopia,pop909,mma")
        for name in self.sources:
            if name not in SOURCES:
                raise MoodstreamError(f"unknown source {name!r} in --sources; valid: {', '.join(SOURCES)}")
        if self.workers < 1:
            raise MoodstreamError(f"--workers must be >= 1, got {self.workers}")
        if self.chunk_size < 1:
            raise MoodstreamError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.mma_pieces < 0 or self.limit < 0:
            raise MoodstreamError("--mma-pieces and --limit must be >= 0")
        if "midicaps" in self.sources and (self.midicaps is None or self.lakh_root is None):
            raise MoodstreamError("source midicaps needs --midicaps FILE.jsonl and --lakh-root DIR (holding lmd_full/)")


# ---- one piece ----------------------------------------------------------------------------------------
_WORKER: dict = {}


def _worker_init(genres: tuple[str, ...], moods: tuple[str, ...]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the pool stops workers with SIGTERM: no handler of the parent's
    _setup_worker(genres, moods)


def _setup_worker(genres, moods) -> None:
    from model.vocab import Vocab

    if _WORKER.get("names") != (genres, moods):
        _WORKER["vocab"] = Vocab.create(genres, moods)
        _WORKER["names"] = (genres, moods)


def tokenize_piece(spec, vocab, data_root: Path) -> dict:
    """{"ids": uint16 array, "bars": [...], "mood": .., "mood_origin": .., ...} or {"skip": reason}."""
    import numpy as np
    import symusic

    from training import sources
    from training.labels import derive_mood, score_evidence
    from training.leadsheet import SheetError
    from model.vocab import ANY

    module = sources.load(spec.source)
    t0 = time.perf_counter()
    if spec.path is not None:
        path = Path(spec.path)
        if not path.is_file():
            return {"skip": "file missing"}
        if path.stat().st_size == 0:
            return {"skip": "empty file"}
        try:
            score = symusic.Score(str(path))
        except Exception as err:  # symusic raises assorted errors on corrupt bytes
            return {"skip": f"unreadable MIDI ({type(err).__name__}: {str(err)[:80]})"}
    else:
        try:
            score = module.render(spec, data_root)
        except SheetError as err:
            return {"skip": str(err)}
    if hasattr(module, "prepare"):
        score = module.prepare(score, spec)
    load_s = time.perf_counter() - t0
    if sum(len(t.notes) for t in score.tracks) == 0:
        return {"skip": "no notes"}
    in_seconds = score.to("second")
    seconds = float(in_seconds.end())
    if seconds > MAX_PIECE_MINUTES * 60:
        return {"skip": f"longer than {MAX_PIECE_MINUTES:.0f} min"}
    evidence = None
    if spec.mood is not None:
        mood, origin = spec.mood, spec.mood_origin
    else:
        ev = score_evidence(score, spec.mode, in_seconds)
        if ev is None:
            mood, origin = ANY, "none"
        else:
            mood, origin = derive_mood(ev), "derived"
            evidence = {"mode": ev.mode, "bpm": None if ev.bpm is None else round(ev.bpm, 2),
                        "onsets_per_s": round(ev.onsets_per_s, 3)}
    t1 = time.perf_counter()
    ids, capped = cap_notes_per_position(vocab, vocab.encode(score)[2:])  # [2:]: drop the conditioning block
    tokenize_s = time.perf_counter() - t1
    arr = np.asarray(ids, dtype=np.uint16)
    bars = np.flatnonzero(arr == vocab.bar_id)
    if bars.size == 0:
        return {"skip": "no bars after tokenisation"}
    return {"ids": arr, "bars": bars.tolist(), "mood": mood, "mood_origin": origin, "evidence": evidence,
            "seconds": round(seconds, 2), "load_s": load_s, "tokenize_s": tokenize_s, "capped_notes": capped}


def cap_notes_per_position(vocab, ids: list[int], max_notes: int | None = None) -> tuple[list[int], int]:
    """(`ids` with the notes past the grammar's `max_notes_per_position` at any position dropped, how many).

    The grammar caps notes per position so that every sampled bar ends; a rare dense file (a chord stacked
    over many tracks) exceeds it, and its extra notes (the last written) go so the data obeys the grammar."""
    from model.grammar import DEFAULT_MAX_NOTES_PER_POSITION

    cap = DEFAULT_MAX_NOTES_PER_POSITION if max_notes is None else max_notes
    kinds = _WORKER.get("kinds")
    if kinds is None or kinds[0] is not vocab:
        tokens = vocab.id_to_token
        kinds = (vocab, {i for i, t in enumerate(tokens) if t.startswith(("Position_", "Bar_"))},
                 {i for i, t in enumerate(tokens) if t.startswith("Program_")})
        _WORKER["kinds"] = kinds
    _, resets, programs = kinds
    out, here, skip, dropped = [], 0, 0, 0
    for token_id in ids:
        if skip:
            skip -= 1
            continue
        if token_id in resets:
            here = 0
        elif token_id in programs:
            here += 1
            if here > cap:
                skip, dropped = 3, dropped + 1  # Pitch, Velocity, Duration follow their Program
                continue
        out.append(token_id)
    return out, dropped


# ---- one chunk ----------------------------------------------------------------------------------------
def _spec_dict(spec) -> dict:
    return {k: v for k, v in asdict(spec).items() if v is not None}


def _write_atomic(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def _process_chunk(task: tuple) -> dict:
    """Tokenize one chunk and write its shard and index part; returns the chunk's counters."""
    import io

    import numpy as np

    name, specs, shard_dir, data_root = task
    vocab = _WORKER["vocab"]
    parts, lines, offset = [], [], 0
    counters = {"pieces": 0, "skipped": 0, "tokens": 0, "load_s": 0.0, "tokenize_s": 0.0, "capped_notes": 0}
    t0 = time.perf_counter()
    for spec in specs:
        try:
            result = tokenize_piece(spec, vocab, Path(data_root))
        except Exception as err:  # bad input never stops a build: the piece is skipped with the reason
            log.debug("piece %s failed", spec.piece, exc_info=True)
            result = {"skip": f"error ({type(err).__name__}: {str(err)[:80]})"}
        if "skip" in result:
            counters["skipped"] += 1
            lines.append({"kind": "skip", "piece": spec.piece, "source": spec.source,
                          "path": spec.path, "reason": result["skip"]})
            continue
        ids = result["ids"]
        parts.append(ids)
        line = {"kind": "piece", "piece": spec.piece, "source": spec.source, "genre": spec.genre,
                "mood": result["mood"], "mood_origin": result["mood_origin"], "split": spec.split,
                "group": spec.group, "shard": f"{name}.npy", "offset": offset, "length": int(ids.size),
                "bars": result["bars"], "seconds": result["seconds"], "evidence": result["evidence"]}
        for key in ("genre_from", "split_from"):  # the source's own label where ours differs
            if getattr(spec, key) is not None:
                line[key] = getattr(spec, key)
        if result["capped_notes"]:
            line["capped_notes"] = result["capped_notes"]
            counters["capped_notes"] += result["capped_notes"]
        lines.append(line)
        offset += int(ids.size)
        counters["pieces"] += 1
        counters["tokens"] += int(ids.size)
        counters["load_s"] += result["load_s"]
        counters["tokenize_s"] += result["tokenize_s"]
    counters["wall_s"] = time.perf_counter() - t0
    shard = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)
    buf = io.BytesIO()
    np.save(buf, shard)
    _write_atomic(Path(shard_dir) / f"{name}.npy", buf.getvalue())
    lines.append({"kind": "chunk", **counters})
    _write_atomic(Path(shard_dir) / f"{name}.jsonl", "".join(json.dumps(line) + "\n" for line in lines))
    return {"name": name, "n": len(specs), **counters}


# ---- the build ----------------------------------------------------------------------------------------
def collect_specs(cfg: BuildConfig) -> list:
    """Every source's piece specs, in source order; checks unique ids and group-disjoint splits."""
    from training import sources
    from training.sources.base import SourceContext

    ctx = SourceContext(data_root=Path(cfg.data_root), seed=cfg.seed, mma_pieces=cfg.mma_pieces,
                        midicaps=cfg.midicaps, lakh_root=cfg.lakh_root, limit=cfg.limit)
    if not (Path(cfg.data_root) / "manifest.csv").is_file() and set(cfg.sources) - {"midicaps"}:
        raise MoodstreamError(f"{cfg.data_root}: no manifest.csv; pass --data-root (the shared data folder) "
                              "or set MOODSTREAM_DATA")
    specs, seen, group_split = [], set(), {}
    for name in cfg.sources:
        for spec in sources.load(name).specs(ctx):
            if spec.piece in seen:
                raise MoodstreamError(f"piece id {spec.piece!r} appears twice (source {name})")
            seen.add(spec.piece)
            if group_split.setdefault(spec.group, spec.split) != spec.split:
                raise MoodstreamError(f"group {spec.group!r} spans two splits ({spec.piece}); fix the labels")
            specs.append(spec)
    return specs


def plan_chunks(specs: list, chunk_size: int, vocab_hash: str) -> list[tuple[str, list]]:
    """(name, specs) per chunk; the name carries a hash of its specs, so changed input makes new chunks."""
    chunks = []
    for i in range(0, len(specs), chunk_size):
        part = specs[i:i + chunk_size]
        digest = hashlib.sha1(json.dumps([FORMAT_VERSION, vocab_hash, [_spec_dict(s) for s in part]],
                                         sort_keys=True).encode()).hexdigest()[:12]
        chunks.append((f"{i // chunk_size:05d}-{digest}", part))
    return chunks


def _is_done(shard_dir: Path, name: str) -> bool:
    return (shard_dir / f"{name}.jsonl").is_file() and (shard_dir / f"{name}.npy").is_file()


def build(cfg: BuildConfig) -> dict:
    """Build (or finish) the dataset in cfg.out_dir; returns the stats written to stats.json."""
    from tqdm import tqdm

    from model.vocab import Vocab
    from training import labels

    t_start = time.time()
    out = Path(cfg.out_dir)
    shard_dir = out / SHARD_DIR
    genres, moods = labels.genres(), labels.moods()
    vocab = Vocab.create(genres, moods)
    if vocab.vocab_size > 65535:
        raise MoodstreamError(f"vocabulary of {vocab.vocab_size} ids does not fit uint16 shards")
    vocab_hash = hashlib.sha1(json.dumps(vocab.fingerprint()).encode()).hexdigest()[:12]

    t_plan = time.time()
    specs = collect_specs(cfg)  # before anything is written: bad input leaves no folder behind
    plan_s = time.time() - t_plan
    shard_dir.mkdir(parents=True, exist_ok=True)
    for leftover in shard_dir.glob("*.tmp*"):  # half-written files from an interrupted run
        leftover.unlink()
    chunks = plan_chunks(specs, cfg.chunk_size, vocab_hash)
    todo = [(name, part) for name, part in chunks if not _is_done(shard_dir, name)]
    reused = len(chunks) - len(todo)
    log.info("%d pieces in %d chunks (%d already built)", len(specs), len(chunks), reused)

    done_pieces = sum(len(part) for name, part in chunks if _is_done(shard_dir, name))
    bar = tqdm(total=len(specs), initial=done_pieces, unit="piece", desc="dataset build", disable=not cfg.progress,
               dynamic_ncols=True, smoothing=0.05)
    t_work = time.time()
    results = []
    tasks = [(name, part, str(shard_dir), str(cfg.data_root)) for name, part in todo]
    try:
        if cfg.workers == 1 or len(tasks) <= 1:
            _setup_worker(genres, moods)
            for task in tasks:
                results.append(_process_chunk(task))
                bar.update(results[-1]["n"])
        else:
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(cfg.workers, initializer=_worker_init, initargs=(genres, moods)) as pool:
                for result in pool.imap_unordered(_process_chunk, tasks):
                    results.append(result)
                    bar.update(result["n"])
    except KeyboardInterrupt:
        bar.close()
        finished = reused + len(results)
        raise KeyboardInterrupt(f"stopped with {finished} of {len(chunks)} chunks built; run the same command "
                                "again to resume") from None
    finally:
        bar.close()
    work_s = time.time() - t_work

    stats = _assemble(out, chunks, vocab, cfg, results, reused, plan_s, work_s, t_start)
    keep = {f"{name}{ext}" for name, _ in chunks for ext in (".npy", ".jsonl")}
    for path in shard_dir.iterdir():
        if path.name not in keep:
            path.unlink()
    return stats


def _assemble(out: Path, chunks, vocab, cfg: BuildConfig, results, reused: int, plan_s: float, work_s: float,
              t_start: float) -> dict:
    """Merge the chunk index parts into index.jsonl and write tokenizer.json and the stats."""
    shard_dir = out / SHARD_DIR
    pieces, skipped, chunk_counters = [], [], []
    for name, _ in chunks:
        for line in (shard_dir / f"{name}.jsonl").read_text().splitlines():
            row = json.loads(line)
            kind = row.pop("kind")
            if kind == "piece":
                row["shard"] = f"{SHARD_DIR}/{row['shard']}"
                pieces.append(row)
            elif kind == "skip":
                skipped.append(row)
            else:
                chunk_counters.append(row)
    _write_atomic(out / INDEX_FILE, "".join(json.dumps(p) + "\n" for p in pieces))
    vocab.save(out / TOKENIZER_FILE)
    stats = dataset_stats(pieces, skipped)
    run = {
        "workers": cfg.workers, "sources": list(cfg.sources), "seed": cfg.seed, "mma_pieces": cfg.mma_pieces,
        "chunks": len(chunks), "chunks_reused": reused, "chunks_built": len(results),
        "plan_s": round(plan_s, 1), "work_s": round(work_s, 1), "build_s": round(time.time() - t_start, 1),
    }
    built_pieces = sum(r["pieces"] + r["skipped"] for r in results)
    built_tokens = sum(r["tokens"] for r in results)
    if results and work_s > 0:
        run["files_per_s"] = round(built_pieces / work_s, 1)
        run["tokens_per_s"] = round(built_tokens / work_s)
    tok_s = sum(c["tokenize_s"] for c in chunk_counters)
    load_s = sum(c["load_s"] for c in chunk_counters)
    if tok_s > 0:
        run["tokenize_only_files_per_s_per_worker"] = round(stats["pieces"] / tok_s, 1)
        run["tokenize_only_tokens_per_s_per_worker"] = round(stats["tokens"] / tok_s)
    run["load_or_generate_s_total"] = round(load_s, 1)
    stats["run"] = run
    stats["mix"] = _effective_mix(out)
    _write_atomic(out / STATS_JSON, json.dumps(stats, indent=1) + "\n")
    _write_atomic(out / STATS_MD, stats_markdown(stats))
    return stats


def dataset_stats(pieces: list[dict], skipped: list[dict]) -> dict:
    """Pieces and tokens per genre × mood × split, per source and per mood origin; skips by reason."""
    cells: dict = defaultdict(lambda: {"pieces": 0, "tokens": 0})
    by = {k: defaultdict(lambda: {"pieces": 0, "tokens": 0}) for k in ("genre", "mood", "source", "mood_origin",
                                                                      "split")}
    for p in pieces:
        cell = cells[f"{p['genre']}|{p['mood']}|{p['split']}"]
        cell["pieces"] += 1
        cell["tokens"] += p["length"]
        for key, table in by.items():
            table[p[key]]["pieces"] += 1
            table[p[key]]["tokens"] += p["length"]
    relabelled = Counter(f"{p['genre_from']} -> {p['genre']}" for p in pieces if "genre_from" in p)
    moved = Counter(f"{p['split_from']} -> {p['split']}" for p in pieces if "split_from" in p)
    capped = [p for p in pieces if p.get("capped_notes")]
    reasons = Counter(s["reason"] for s in skipped)
    by_source = Counter(s["source"] for s in skipped)
    backed = sorted(g for g, c in by["genre"].items()
                    if g != "any" and c["pieces"] >= MIN_GENRE_PIECES and c["tokens"] >= MIN_GENRE_TOKENS)
    return {
        "format": FORMAT_VERSION, "pieces": len(pieces), "tokens": sum(p["length"] for p in pieces),
        "cells": dict(sorted(cells.items())), **{f"by_{k}": dict(sorted(v.items())) for k, v in by.items()},
        "backed_genres": backed, "thresholds": {"pieces": MIN_GENRE_PIECES, "tokens": MIN_GENRE_TOKENS},
        "relabelled": {"count": sum(relabelled.values()), "by_change": dict(relabelled.most_common())},
        "split_moves": {"count": sum(moved.values()), "by_change": dict(moved.most_common())},
        "capped": {"pieces": len(capped), "notes": sum(p["capped_notes"] for p in capped),
                   "files": [p["piece"] for p in capped]},
        "skipped": {"count": len(skipped), "by_reason": dict(reasons.most_common()),
                    "by_source": dict(by_source.most_common()),
                    "files": [{"piece": s["piece"], "path": s["path"], "reason": s["reason"]} for s in skipped]},
    }


def _effective_mix(out: Path) -> dict:
    """The training sampler's default mix over genres, moods, sources (what a window is drawn from)."""
    from training.windows import sampling_mix

    try:
        return sampling_mix(out, "train")
    except MoodstreamError as err:  # e.g. a tiny test build without training pieces
        return {"error": str(err)}


def stats_markdown(stats: dict) -> str:
    """stats.md: the tables a person reads; stats.json has everything."""
    run = stats["run"]
    lines = ["# Dataset statistics", ""]
    lines.append(f"{stats['pieces']:,} pieces, {stats['tokens']:,} tokens; {stats['skipped']['count']} files "
                 f"skipped. Sources: {', '.join(run['sources'])} (seed {run['seed']}, {run['mma_pieces']} "
                 "arrangements planned).")
    speed = ""
    if "files_per_s" in run:
        speed = (f" Throughput {run['files_per_s']} files/s, {run['tokens_per_s']:,} tokens/s with "
                 f"{run['workers']} worker(s)")
    if "tokenize_only_files_per_s_per_worker" in run:
        speed += (f"; tokenizing alone {run['tokenize_only_files_per_s_per_worker']} files/s, "
                  f"{run['tokenize_only_tokens_per_s_per_worker']:,} tokens/s per worker")
    lines.append(f"Build time {run['build_s']} s (planning {run['plan_s']} s, tokenizing {run['work_s']} s; "
                 f"{run['chunks_built']} chunks built, {run['chunks_reused']} reused).{speed}.")
    lines.append("")
    th = stats["thresholds"]
    lines.append(f"Genres backed by the data (≥ {th['pieces']} pieces and ≥ {th['tokens']:,} tokens): "
                 f"**{len(stats['backed_genres'])}** — {', '.join(stats['backed_genres'])}.")
    lines.append("")
    mix = stats.get("mix", {})
    total_tokens = max(stats["tokens"], 1)
    for key, title in (("genre", "Genre"), ("mood", "Mood"), ("source", "Source"), ("mood_origin", "Mood origin"),
                       ("split", "Split")):
        shares = mix.get(key)  # the training sampler's share of windows (train split)
        head = f"| {title} | pieces | tokens | token share |" + (" train window share |" if shares else "")
        lines += [f"## By {title.lower()}", "", head, "|---|---:|---:|---:|" + ("---:|" if shares else "")]
        for name, c in stats[f"by_{key}"].items():
            row = f"| {name} | {c['pieces']:,} | {c['tokens']:,} | {c['tokens'] / total_tokens:.1%} |"
            lines.append(row + (f" {shares.get(name, 0.0):.1%} |" if shares else ""))
        lines.append("")
    genres = sorted({k.split("|")[0] for k in stats["cells"]})
    moods = sorted({k.split("|")[1] for k in stats["cells"]})
    for split in ("train", "validation"):
        lines += [f"## Genre × mood ({split}): pieces / tokens", "",
                  "| genre | " + " | ".join(moods) + " |", "|---|" + "---:|" * len(moods)]
        for g in genres:
            row = []
            for m in moods:
                c = stats["cells"].get(f"{g}|{m}|{split}")
                row.append(f"{c['pieces']:,} / {c['tokens']:,}" if c else "–")
            lines.append(f"| {g} | " + " | ".join(row) + " |")
        lines.append("")
    relabelled = stats.get("relabelled", {})
    if relabelled.get("count"):
        lines += ["## Relabelled by artist (labels.json `artist`)", "",
                  f"{relabelled['count']} pieces whose collector folder names another genre than their artist's:",
                  "", "| folder genre -> genre | pieces |", "|---|---:|"]
        lines += [f"| {change} | {n} |" for change, n in relabelled["by_change"].items()]
        lines.append("")
    moves, capped = stats.get("split_moves", {}), stats.get("capped", {})
    if moves.get("count"):
        lines += [f"{moves['count']} pieces moved split to keep their artist in one split: "
                  + ", ".join(f"{k} {n}" for k, n in moves["by_change"].items()) + ".", ""]
    if capped.get("notes"):
        lines += [f"{capped['notes']} notes dropped past the grammar's notes-per-position cap in "
                  f"{capped['pieces']} piece(s): {', '.join(capped['files'][:5])}.", ""]
    if "genre" in mix:
        lines += ["## Effective training mix (default sampler weights)", ""]
        for key in ("genre", "mood", "source", "mood_origin"):
            parts = ", ".join(f"{k} {v:.1%}" for k, v in sorted(mix[key].items(), key=lambda kv: -kv[1]))
            lines.append(f"- {key}: {parts}")
        lines.append("")
    lines += ["## Skipped files", ""]
    if not stats["skipped"]["count"]:
        lines.append("None.")
    for reason, n in stats["skipped"]["by_reason"].items():
        lines.append(f"- {n} × {reason}")
    lines.append("")
    return "\n".join(lines)
