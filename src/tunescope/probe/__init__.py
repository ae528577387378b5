"""Knowledge and forgetting probes: what tuning taught a model, and what it made it forget.

`tunescope probe` (:func:`run_probes`) asks the base and each tuned model paraphrased
multiple-choice questions about the fictional facts a run was trained on, and measures forgetting
as held-out loss and general-knowledge accuracy. `tunescope preflight` (:func:`preflight`) checks
before tuning whether the base model already knows the data.

From Python::

    from tunescope.probe import ProbeConfig, run_probes

    report = run_probes(ProbeConfig(base="smollm2", tuned=["runs/facts-lora"], out="runs/probe"))
    print(report["models"]["runs/facts-lora"]["knowledge"]["multiple_choice"])
"""

from tunescope.probe.forgetting import ForgettingScore, compare_forgetting, score_forgetting
from tunescope.probe.knowledge import KnowledgeScore, score_knowledge
from tunescope.probe.pipeline import PROBE_FILE, ProbeConfig, run_probes
from tunescope.probe.preflight import PreflightConfig, PreflightResult, preflight

__all__ = [
    "PROBE_FILE",
    "ForgettingScore",
    "KnowledgeScore",
    "PreflightConfig",
    "PreflightResult",
    "ProbeConfig",
    "compare_forgetting",
    "preflight",
    "run_probes",
    "score_forgetting",
    "score_knowledge",
]
