//! The metric names egress reports, in one place: the code that records each metric and the
//! descriptions that [`describe_metrics`](crate::describe_metrics) registers use these. A leaf
//! module, so that every module that records a metric can name it without depending on the
//! telemetry module.

pub(crate) const REQUEST_DURATION: &str = "http.client.request.duration";
pub(crate) const CALL_DURATION: &str = "egress.call.duration";
pub(crate) const RETRIES: &str = "egress.retries";
pub(crate) const BUDGET_REFUSALS: &str = "egress.retry_budget.refusals";
pub(crate) const VALIDATION_FAILURES: &str = "egress.validation.failures";
pub(crate) const GUARD_WAITS: &str = "egress.guard.waits";
pub(crate) const GUARD_REFUSALS: &str = "egress.guard.refusals";
pub(crate) const CIRCUIT_STATE: &str = "egress.circuit.state";
pub(crate) const CIRCUIT_TRANSITIONS: &str = "egress.circuit.transitions";
pub(crate) const HOLDS: &str = "egress.holds";
pub(crate) const FLEET_FALLBACKS: &str = "egress.fleet.fallbacks";
pub(crate) const HEDGES: &str = "egress.hedges";
pub(crate) const HEDGED_CALLS: &str = "egress.hedged_calls";
