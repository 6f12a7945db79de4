"""Layer 2, retention: rules + entries -> decisions with reasons. Pure; no I/O.

See ``docs/retention.md`` for the rules and ``planner.py`` for the passes.
"""

from lethe.retention.diff import Change, DiffResult, PlanDiff, diff_plans
from lethe.retention.planner import Planner, PlannerError, plan
from lethe.retention.select import Selector
from lethe.retention.summary import RULE_ORDER, Decision, RuleStats, Summary

__all__ = [
    "RULE_ORDER",
    "Change",
    "Decision",
    "DiffResult",
    "PlanDiff",
    "Planner",
    "PlannerError",
    "RuleStats",
    "Selector",
    "Summary",
    "diff_plans",
    "plan",
]
