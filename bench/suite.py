"""The published benchmark suite: each result once, in the order docs/BENCHMARKS.md shows them.

`bench.run` runs these, `bench.collect` writes their results (bench/results/NAME.md, each followed by its
hand-written bench/notes/NAME.md) in this order. A benchmark's module lives in the room of what it measures
(bench/training, bench/search, bench/dedup); the helpers they share (machine info, data makers, scoring) live in
bench/kit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Benchmark:
    name: str  # the result: bench/results/NAME.json and NAME.md
    module: str  # run as `python -m MODULE ARGS`
    args: tuple[str, ...] = ()  # "{data}" is replaced by the data folder
    minutes: int = 0  # rough cost on the 2-core development machine; 0: not run by bench.run (hand-run)
    needs_gpu: bool = False


SUITE: tuple[Benchmark, ...] = (
    Benchmark("train_throughput", "bench.training.throughput", ("--images", "{data}/clipart"), 15),
    Benchmark("decode_pipeline", "bench.training.decode_pipeline", ("--photos", "{data}/photos"), 15),
    Benchmark("train_quality", "bench.training.quality", (), 100),  # each encoder embedded in-process and by CLI
    Benchmark("learning_curve", "bench.training.learning_curve"),  # hours: run by hand, see its docstring
    Benchmark(  # over learning_curve's issue-29 results: which label-free signal tracks the first page
        "learning_signals",
        "bench.training.learning_signals",
        tuple(
            f"--result=bench/results/learning_curve_29_{tag}.json"
            for tag in ("n586", "n586_long", "n2344", "quiet", "quiet_levers", "quiet_levers2")
        )
        + tuple(
            f"--result=bench/results/learning_curve_29_seed{s}.json"
            for s in ("1_keys", "1_linear", "1_progressive", "2_defaults")
        ),
    ),
    Benchmark("train_step_speed", "bench.training.step_speed"),
    Benchmark("bf16_conv_check", "bench.training.bf16_conv_check", (), 1),
    Benchmark("compile_speed", "bench.training.compile_speed"),
    Benchmark("batch_augment_speed", "bench.training.batch_augment_speed", (), 2),
    Benchmark("init_warm_start", "bench.training.init_warm_start"),
    Benchmark("index_throughput", "bench.search.index_throughput", ("--photos", "{data}/photos"), 15),
    Benchmark("search_latency", "bench.search.latency", (), 40),
    Benchmark("emoji_recall", "bench.search.emoji_recall", ("--emoji", "{data}/emoji"), 25),
    Benchmark("dedup_quality", "bench.dedup.quality", ("{data}",), 30),
    Benchmark("dedup_threshold", "bench.dedup.threshold", ("{data}",), 20),
    Benchmark("dedup_family", "bench.dedup.family", ("{data}",), 30),
    Benchmark("dedup_family_grid", "bench.dedup.family_grid", (), 12),  # after dedup_family: its folders, encoder
    Benchmark("dedup_rule", "bench.dedup.family", ("{data}", "--reuse", "--rule-only"), 20),  # after dedup_family
    Benchmark("dedup_drawings", "bench.dedup.drawings", ("{data}", "--model", "/tmp/dedup-family/run"), 20),
    Benchmark("dedup_shots", "bench.dedup.shots", ("--model", "/tmp/dedup-family/run"), 5),
    Benchmark("feature_votes_scale", "bench.dedup.feature_votes_scale", (), 10),
    Benchmark("dedup_train_size", "bench.dedup.train_size", (), 40),
    Benchmark("dedup_scale", "bench.dedup.scale", (), 20),
    Benchmark("eval_samples", "bench.search.eval_samples"),
    Benchmark("score_bands", "bench.search.score_bands", (), 2),  # on indexes/samples, which scripts/demo.sh builds
    Benchmark("app_load", "bench.search.app_load", (), 3),  # on indexes/samples, which scripts/demo.sh builds
    Benchmark("app_click", "bench.search.app_click", (), 2),  # the same index, in Chromium
)
