"""The plan: from the dataset fingerprint and the measured step cost to the keys a config leaves unset."""

from medseg.planning.plan import PLAN_VERSION, Plan, PlanEntry, PlannedRun, make_plan, plan_run, user_set_keys
from medseg.planning.stepcost import StepCost, measure_cost

__all__ = ["PLAN_VERSION", "Plan", "PlanEntry", "PlannedRun", "StepCost", "make_plan", "measure_cost", "plan_run", "user_set_keys"]
