# The default ARF governor policy.
#
# How to read it: each rule in the "guard rails" section is one guard rail. When a
# rule applies, it adds a *finding*: a short id, the route it asks for, how many
# distinct people must approve, which roles may approve, and one sentence that the
# on-call engineer will read in the explanation.
#
# The findings are then combined (see "Combining findings" at the end):
#   - any `deny` wins, and nothing runs;
#   - otherwise the strictest route wins: autonomous < acknowledge < approval;
#   - the number of approvals is the largest any finding asks for;
#   - the roles that may approve are every role any finding names.
# If no rule applies, the action needs one approval: autonomy is granted by a rule,
# never assumed.
#
# The governor evaluates `data.arf.governor.decision`. Its input document
# (`input.version == 3`; the JSON Schema is in docs/governance.md) carries:
#   input.action       the pathway, target and parameters the model proposes, and
#                      earlier_attempts at the same action in this incident
#                      ({decision_id, state}; only ones that did not succeed)
#   input.incident     what the incident is about, from the agent's logged signals
#                      (never from the caller): id, services, environments,
#                      signal_kinds, signals; and attempt (1, plus the actions of
#                      the incident the governor authorized before, from its records)
#   input.pathway      the reviewed pathway metadata: base_risk, blast_radius,
#                      irreversible, security_sensitive, target_kind, rollback
#   input.target       the reviewed target: name, kind, service, environment, tier,
#                      security_sensitive (from the governor's inventory, not the model),
#                      relation to the incident (incident_service, dependency,
#                      out_of_scope) and, for a dependency, dependency_of
#   input.environment  name, known (listed in the governor's config), sensitivity
#   input.risk         score in [0, 1], band (low, medium, high, critical), factors
#   input.confidence   the hypothesis confidence in [0, 1], as the model stated it
#   input.calibration  model, confidence (calibrated by the model's record on this
#                      pathway), runs, verified, prior_cap, prior_weight
#   input.requester    identity and role of the caller (the agent)
#   input.proposal     id, incident_id, snapshot_hash, reasoner
#   input.autonomy     enabled (the effective switch), global (the kill switch),
#                      global_reason, rate_limit {limit, used, exceeded},
#                      error_budget {limit, window_secs, failures, exhausted},
#                      quarantine {active, reason}
#   input.freeze_windows  every configured change freeze, each with `active`
#   input.outcome_stats   this pathway's runs, verified, rolled_back, failed on the service
#   input.mode         the service's mode in its environment: shadow (the governor
#                      sends nothing, whatever the route), review or autonomous
#   input.track_record this pathway's record on the service toward graduation:
#                      shadow_agreed, shadow_disagreed, verified, failed (within
#                      window_secs), earned (successes since the last setback),
#                      required_runs, graduated
#
# A rule that errors does not let an action through: the governor turns any
# evaluation error into `deny` and shows the error to the on-call engineer.
# The governor also enforces the kill switch, the rate limit, the error budget, the
# quarantine of a service whose rollback failed, and change freezes after this policy (only ever more strictly), so a policy that
# forgot one could not loosen it; this policy states them so explanations say why.
# Every rule here has cases in tests/*.cases.json: run `arf policy test examples/policies`.
package arf.governor

import rego.v1

# Roles that approve ordinary changes.
oncall_approvers := ["oncall", "admin"]

# Environments where low-risk, reversible actions may run on their own.
autonomous_environments := {"staging", "development"}

# The lowest hypothesis confidence the governor acts on at all.
confidence_floor := 0.3

# The lowest *calibrated* confidence for an action to run without a person: the
# model's stated confidence weighed by its record on the pathway (a model with no
# record is trusted at most 0.7, whatever it says; see docs/governance.md).
autonomy_confidence := 0.6

# The largest share of a target a pathway may touch.
blast_radius_limit := 0.8

# Distinct approvers by risk band, in production.
approvers_by_band := {"low": 1, "medium": 1, "high": 2, "critical": 2}

# Pathways each service tier allows at all; a tier not listed allows any pathway.
# Critical services accept only well-understood, reversible remediations.
tier_allowlist := {"critical": {"restart_service", "revert_config_commit", "rollback_deployment", "scale_out"}}

# Service tiers whose actions may run on their own (critical services always wait for a person).
autonomous_tiers := {"standard", "best_effort"}

# Pathways and target kinds that touch identity, secrets or network exposure, even
# when the catalog or inventory forgot to say so.
security_pathways := {"rotate_credentials", "revoke_access_key", "update_iam_policy", "rotate_secret", "block_public_bucket", "update_network_policy", "open_firewall_port"}

security_target_kinds := {"iam_role", "iam_user", "secret", "security_group", "network_policy", "firewall", "load_balancer"}

# One finding, as every rule below reports it.
finding(id, route, approvals, roles, reason) := {
	"id": id,
	"route": route,
	"approvals": approvals,
	"roles": roles,
	"reason": reason,
}

# ---------------------------------------------------------------------------
# Guard rails: denials. These stop an action, whatever else is true.

# Scope: an action belongs to its incident. A target that is neither one of the
# incident's services, in one of its environments, nor a declared dependency of one
# gives the incident no authority over it: nothing runs, whoever approves. (An alert
# for `checkout` cannot restart `payments`, and a staging alert cannot touch production.)
findings contains finding(
	"out_of_scope", "deny", 0, [],
	sprintf("target `%v` (service `%v` in %v) is outside incident %v, which is about %v in %v, so nothing runs", [input.target.name, input.target.service, input.target.environment, input.incident.id, concat(", ", input.incident.services), concat(", ", input.incident.environments)]),
) if {
	input.target.relation == "out_of_scope"
}

# Confidence floor: a hypothesis the model itself doubts is never acted on.
findings contains finding(
	"confidence_floor", "deny", 0, [],
	sprintf("the hypothesis confidence %v is below the floor of %v, so nothing runs", [input.confidence, confidence_floor]),
) if {
	input.confidence < confidence_floor
}

# Blast-radius limit: a pathway that touches most of a target at once is too
# dangerous to run from a model's proposal, approved or not.
findings contains finding(
	"blast_radius_limit", "deny", 0, [],
	sprintf("the pathway touches %v%% of the target, above the limit of %v%%, so nothing runs", [round(input.pathway.blast_radius * 100), round(blast_radius_limit * 100)]),
) if {
	input.pathway.blast_radius > blast_radius_limit
}

# Change freeze: while a freeze window is active, nothing runs except rollbacks
# (undoing a change is how a freeze is kept, not broken).
findings contains finding(
	"change_freeze", "deny", 0, [],
	sprintf("the change freeze `%v` is active (%v); only rollbacks run during a freeze, so nothing runs", [w.name, w.reason]),
) if {
	some w in input.freeze_windows
	w.active
	not input.pathway.rollback
}

# Pathway allowlists per service tier: a critical service accepts only the
# pathways its tier lists.
findings contains finding(
	"tier_allowlist", "deny", 0, [],
	sprintf("pathway `%v` is not allowed on %v-tier services, so nothing runs", [input.pathway.name, input.target.tier]),
) if {
	allowed := tier_allowlist[input.target.tier]
	not input.pathway.name in allowed
}

# ---------------------------------------------------------------------------
# Guard rails: when people must approve.

# A second attempt: the same action already failed or was rolled back in this
# incident. Trying again may be right (a transient failure), but a person decides.
findings contains finding(
	"repeat_attempt", "approval", 1, oncall_approvers,
	sprintf("this action already ran in this incident and ended `%v` (decision %v), so an on-call engineer must approve another attempt", [a.state, a.decision_id]),
) if {
	some a in input.action.earlier_attempts
	a.state in {"rolled_back", "failed", "rollback_failed"}
}

# A later attempt: an earlier action of this incident did not fix it (it failed
# verification and was rolled back, its pathway's precheck refused it, or it was
# logged as started and never ran), and the agent proposes its next hypothesis or a
# person asks again. A person decides.
findings contains finding(
	"next_attempt", "approval", 1, oncall_approvers,
	sprintf("this is attempt %v at incident %v: an earlier action of it did not fix it (rolled back, refused by its precheck, or never run), so an on-call engineer must approve the next one", [input.incident.attempt, input.incident.id]),
) if {
	input.incident.attempt > 1
}

# A declared dependency (the database behind the alerting API) may well be the cause,
# but acting on it reaches past the service that alerted: a person approves.
findings contains finding(
	"dependency_target", "approval", 1, oncall_approvers,
	sprintf("target `%v` is a dependency of %v, not the alerting service itself, so an on-call engineer must approve", [input.target.name, concat(", ", input.target.dependency_of)]),
) if {
	input.target.relation == "dependency"
}

# Production changes need an on-call engineer (or an admin) to approve.
findings contains finding(
	"production_approval", "approval", 1, oncall_approvers,
	"the target is in production, so an on-call engineer must approve",
) if {
	input.environment.name == "production"
}

# High-risk production changes need two different people: the number of approvers
# comes from the risk band.
findings contains finding(
	"production_high_risk", "approval", approvers_by_band[input.risk.band], oncall_approvers,
	sprintf("the risk is %v in production, so two different people must approve", [input.risk.band]),
) if {
	input.environment.name == "production"
	approvers_by_band[input.risk.band] > 1
}

# Critical risk anywhere needs two different people.
findings contains finding(
	"critical_risk", "approval", 2, oncall_approvers,
	sprintf("the risk score %v is critical, so two different people must approve", [input.risk.score]),
) if {
	input.risk.band == "critical"
	input.environment.name != "production"
}

# Critical services always wait for a person, wherever they run.
findings contains finding(
	"critical_tier", "approval", 1, oncall_approvers,
	sprintf("service `%v` is critical-tier, so an on-call engineer must approve", [input.target.service]),
) if {
	input.target.tier == "critical"
}

# The global kill switch (`arf autonomy off`): nothing runs on its own.
findings contains finding(
	"autonomy_off", "approval", 1, oncall_approvers,
	sprintf("the global autonomy switch is off (%v), so a person must approve", [switch_reason]),
) if {
	not input.autonomy.global
}

switch_reason := input.autonomy.global_reason if {
	input.autonomy.global_reason != ""
} else := "no reason given"

# Rate limit: a service that had its quota of autonomous actions this hour gets
# no more until an admin resets it; a burst of actions is itself a warning sign.
findings contains finding(
	"rate_limit", "approval", 1, oncall_approvers,
	sprintf("service `%v` reached its limit of %v autonomous actions per hour, so autonomy is off for it until an admin resets it", [input.target.service, input.autonomy.rate_limit.limit]),
) if {
	input.autonomy.rate_limit.exceeded
}

# Error budget: a pathway that keeps failing verification on a service stops running
# there on its own until an admin resets it.
findings contains finding(
	"error_budget", "approval", 1, oncall_approvers,
	sprintf("pathway `%v` failed verification %v times on `%v` (budget %v), so autonomy is off for it until an admin resets it", [input.pathway.name, input.autonomy.error_budget.failures, input.target.service, input.autonomy.error_budget.limit]),
) if {
	input.autonomy.error_budget.exhausted
}

# Quarantine: a rollback failed on the service, so nobody knows its state. Nothing
# runs on it without a person until an admin resets the quarantine.
findings contains finding(
	"quarantine", "approval", 1, oncall_approvers,
	sprintf("service `%v` is quarantined (%v), so a person must approve anything that runs on it", [input.target.service, input.autonomy.quarantine.reason]),
) if {
	input.autonomy.quarantine.active
}

# Irreversible pathways cannot be undone, so two different people must agree.
findings contains finding(
	"irreversible", "approval", 2, oncall_approvers,
	"the pathway is irreversible (there is no rollback), so two different people must approve",
) if {
	input.pathway.irreversible
}

# Security-sensitive pathways or targets (identity, secrets, network exposure)
# need approval, and the security team may give it.
findings contains finding(
	"security_sensitive", "approval", 1, ["security"],
	sprintf("%v security-sensitive, so it needs approval and security may review it", [security_subject]),
) if {
	security_subject
}

security_subject := "the pathway and the target are" if {
	pathway_security_sensitive
	target_security_sensitive
} else := "the pathway is" if {
	pathway_security_sensitive
} else := "the target is" if {
	target_security_sensitive
}

pathway_security_sensitive if input.pathway.security_sensitive

pathway_security_sensitive if input.pathway.name in security_pathways

target_security_sensitive if input.target.security_sensitive

target_security_sensitive if input.target.kind in security_target_kinds

# Review mode: a person approves every action on the service until the pathway has
# earned autonomy there by its track record (agreeing shadow judgements and verified
# runs in a row; one setback demotes it). Graduation only lifts review: every other
# rule still applies.
findings contains finding(
	"review_mode", "approval", 1, oncall_approvers,
	sprintf("service `%v` is in review mode and pathway `%v` has %v of the %v successes in a row it needs to run on its own, so an on-call engineer must approve", [input.target.service, input.pathway.name, input.track_record.earned, input.track_record.required_runs]),
) if {
	input.mode == "review"
	not input.track_record.graduated
}

# An environment the governor's configuration does not know is treated as
# sensitive: a person must look.
findings contains finding(
	"unknown_environment", "approval", 1, oncall_approvers,
	sprintf("environment `%v` is not a known environment, so an on-call engineer must approve", [input.environment.name]),
) if {
	not input.environment.known
}

# ---------------------------------------------------------------------------
# Guard rails: when an action may run on its own.

# Low-risk autonomy: in staging or development, a reversible action with low or
# medium risk and a confident hypothesis runs without waiting for a person.
# Every other guard rail above still applies: any of them makes it stricter.
findings contains finding(
	"low_risk_autonomy", "autonomous", 0, [],
	sprintf("a reversible, %v-risk action in %v with calibrated confidence %v may run on its own", [input.risk.band, input.environment.name, input.calibration.confidence]),
) if {
	input.autonomy.enabled
	input.environment.known
	input.environment.name in autonomous_environments
	input.target.tier in autonomous_tiers
	not input.pathway.irreversible
	input.risk.band in {"low", "medium"}
	input.calibration.confidence >= autonomy_confidence
}

# ---------------------------------------------------------------------------
# Combining findings.

# When no rule applies, a person decides.
no_rule_applies := finding(
	"no_rule_applies", "approval", 1, oncall_approvers,
	"no rule allows this action to run on its own, so an on-call engineer must approve",
)

effective_findings := findings if {
	count(findings) > 0
} else := {no_rule_applies}

# Routes from least to most strict.
routes := ["autonomous", "acknowledge", "approval", "deny"]

strictness := {"autonomous": 0, "acknowledge": 1, "approval": 2, "deny": 3}

# A single deny makes this `deny`; otherwise the strictest route asked for.
route := routes[max({strictness[f.route] | some f in effective_findings})]

needs_people if route in {"acknowledge", "approval"}

approvals_required := max({f.approvals | some f in effective_findings}) if {
	needs_people
} else := 0

approver_roles := sort({role |
	some f in effective_findings
	f.route in {"acknowledge", "approval"}
	some role in f.roles
}) if {
	needs_people
} else := []

# Findings in a stable order (by id), so explanations read the same every time.
fired := [f |
	some id in sort({f.id | some f in effective_findings})
	some f in effective_findings
	f.id == id
]

# The answer the governor reads. Its shape is the governor's output contract.
decision := {
	"route": route,
	"reasons": [f.reason | some f in fired],
	"rules_fired": [f.id | some f in fired],
	"approvals_required": approvals_required,
	"approver_roles": approver_roles,
}
