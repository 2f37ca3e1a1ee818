//! Policy, risk, routing, approvals, explanations, decision signing and dispatch.
