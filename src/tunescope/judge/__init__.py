"""The multi-aspect judge: score answers 1-5 on five aspects, rate safety, or compare two models.

From Python::

    from tunescope.judge import JudgeConfig, judge

    result = judge(JudgeConfig(responses=["runs/lora/responses.jsonl"], backend="openai",
                               base_url="http://127.0.0.1:8000/v1", judge_model="my-judge", out="runs/judge"))
    print(result.summary["models"])

The pieces (prompts, parsing, requests, aggregates, plots) are importable one by one; see each
module. The backends and the reply cache are :mod:`tunescope.llm`'s, shared with `tunescope simplify`.
"""

from tunescope.judge.aggregate import item_average, mean_with_ci, pairwise_summary, score_summary
from tunescope.judge.config import JudgeConfig
from tunescope.judge.justeval import export_justeval, import_justeval
from tunescope.judge.parsing import ParsedReply, parse_pairwise_reply, parse_score_reply
from tunescope.judge.pipeline import (
    JudgeResult,
    build_backend,
    build_tasks,
    draw_plots,
    incomplete_message,
    judge,
    summarize,
)
from tunescope.judge.plots import plot_grouped_bars, plot_pairwise, plot_radar
from tunescope.judge.prompts import ASPECTS, TEMPLATES, PromptTemplate
from tunescope.judge.requests import JudgeTask, RunStats, read_judgements, run_tasks
from tunescope.judge.responses import ResponseSet, read_response_set, read_response_sets

__all__ = [
    "ASPECTS",
    "TEMPLATES",
    "JudgeConfig",
    "JudgeResult",
    "JudgeTask",
    "ParsedReply",
    "PromptTemplate",
    "ResponseSet",
    "RunStats",
    "item_average",
    "mean_with_ci",
    "build_backend",
    "build_tasks",
    "draw_plots",
    "export_justeval",
    "import_justeval",
    "incomplete_message",
    "judge",
    "pairwise_summary",
    "parse_pairwise_reply",
    "parse_score_reply",
    "plot_grouped_bars",
    "plot_pairwise",
    "plot_radar",
    "read_judgements",
    "read_response_set",
    "read_response_sets",
    "run_tasks",
    "score_summary",
    "summarize",
]
