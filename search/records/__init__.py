"""The study's records: every key the tool writes on a study and its trials, and the one way to read them.

A search keeps everything in Optuna's storage: the study carries its settings, budget, seeds, confirmation and
evaluations as user attributes; each trial its schedule, seed, curves and fate. The package, by job:

- ``keys``: the names (``StudyKey``, ``TrialKey``), each a ``Key`` with its typed reader and writer, and the
  fixed vocabularies (``TrialRole``, ``RunState``), the seed ranges and the schema version;
- ``values``: typed values the records hold (``Budget``, ``Arm``, ``ConfirmationSummary``);
- ``trials``: one trial's records and what a trial is (baseline run, replica, reference, learned arm, candidate);
- ``queries``: the study's trials by what they are, and the one ranking;
- ``retries``: references and confirm runs queued once each, retries of trials cut short;
- ``study``: the study's settings, budget, seeds, confirmation, evaluations, names and schema migration.

Nothing else in the tree reads or writes ``user_attrs`` (a test checks). ``from search import records`` gives
every public name below, so a reader writes ``records.best_trial(study)`` whichever file holds it.
"""
from search.records.keys import (BASELINE, BASELINE_SEED_OFFSET, CONFIRM_SEED_OFFSET, CONFIRM_SUFFIX,
                                 DIED, EVALUATION_PREFIX, EVALUATION_SEED_START, FINISHED, INTERRUPTED, METRIC,
                                 RETRY_KEEPS, SCHEMA_VERSION, SILENT, Key, RunState, StudyKey, TrialKey, TrialRole)
from search.records.queries import (baseline_pending, baseline_runs, baseline_trial, best_trial, candidate_pool,
                                    candidates, complete, finished, finished_count, learned_arms, rank_in_search,
                                    rank_key, ranked, reference_count)
from search.records.retries import add_retry, enqueue_confirm_run, enqueue_reference, retry_history, retry_of
from search.records.study import (budget, confirm_study_name, confirmation, depth, epochs, evaluation_for,
                                  evaluation_key, evaluations, holds_records, is_confirm_study, migrate, name_metric,
                                  record_evaluation, require_settings, schema, search_study_name, settings,
                                  stored_settings, study_seeds, verdict_budget, write_settings)
from search.records.trials import (curve, cut_short, diverged_reason, fail_reason, from_environment,
                                   is_baseline_run, is_candidate, is_learned_arm, is_reference, is_replica,
                                   is_searched, label, preset_of, role, schedule_of, schedule_text, seed_of,
                                   write_fail_reason, write_run, write_schedule)
from search.records.values import Arm, Budget, ConfirmationSummary

__all__ = [
    "BASELINE", "BASELINE_SEED_OFFSET", "CONFIRM_SEED_OFFSET", "CONFIRM_SUFFIX", "DIED", "EVALUATION_PREFIX",
    "EVALUATION_SEED_START", "FINISHED", "INTERRUPTED", "METRIC", "RETRY_KEEPS", "SCHEMA_VERSION", "SILENT", "Key",
    "RunState", "StudyKey", "TrialKey", "TrialRole",
    "baseline_pending", "baseline_runs", "baseline_trial", "best_trial", "candidate_pool", "candidates", "complete",
    "finished", "finished_count", "learned_arms", "rank_in_search", "rank_key", "ranked", "reference_count",
    "add_retry", "enqueue_confirm_run", "enqueue_reference", "retry_history", "retry_of",
    "budget", "confirm_study_name", "confirmation", "depth", "epochs", "evaluation_for", "evaluation_key",
    "evaluations", "holds_records", "is_confirm_study", "migrate", "name_metric", "record_evaluation", "require_settings", "schema",
    "search_study_name", "settings", "stored_settings", "study_seeds", "verdict_budget", "write_settings",
    "curve", "cut_short", "diverged_reason", "fail_reason", "from_environment", "is_baseline_run", "is_candidate",
    "is_learned_arm", "is_reference", "is_replica", "is_searched", "label", "preset_of", "role", "schedule_of",
    "schedule_text", "seed_of", "write_fail_reason", "write_run", "write_schedule",
    "Arm", "Budget", "ConfirmationSummary",
]
