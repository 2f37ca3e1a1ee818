//! Which records in the log this process appended: for a replica that follows
//! the log for what its peers, under the same writer identity, appended (the
//! agent's replicas, issue 16). A record read back is one's own only if one of
//! this process's appends was answered with it.
//!
//! The follower may read a record before the append that wrote it has been
//! answered. An append that started after a record was committed gets a later
//! sequence number, so the follower need only wait for the appends in flight
//! when it read the record; then the record is this process's exactly when one
//! of them was answered with it. An append whose answer was lost (or whose caller
//! gave up) counts as another's: if it landed, the follower applies it, since the
//! caller, told of a failure, applied nothing.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Mutex, PoisonError};

#[derive(Default)]
pub struct Own {
    state: Mutex<State>,
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    next_ticket: u64,
    in_flight: BTreeSet<u64>,
    seqs: HashSet<u64>,
}

/// One append in flight; finished (as answered with nothing) if dropped unfinished.
pub(crate) struct Ticket<'a> {
    own: &'a Own,
    ticket: Option<u64>,
}

impl Ticket<'_> {
    pub(crate) fn answered(mut self, seqs: impl IntoIterator<Item = u64>) {
        if let Some(ticket) = self.ticket.take() {
            self.own.finish(ticket, seqs);
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.own.finish(ticket, []);
        }
    }
}

impl Own {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn start(&self) -> Ticket<'_> {
        let mut state = self.lock();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.in_flight.insert(ticket);
        Ticket { own: self, ticket: Some(ticket) }
    }

    fn finish(&self, ticket: u64, seqs: impl IntoIterator<Item = u64>) {
        let mut state = self.lock();
        state.in_flight.remove(&ticket);
        state.seqs.extend(seqs);
        drop(state);
        self.changed.notify_waiters();
    }

    /// Whether the record `seq`, just read from the log, is one this process
    /// appended. Asked once per record, in the order read: the answer is
    /// forgotten once given.
    pub async fn is_own(&self, seq: u64) -> bool {
        self.which(&[seq]).await.first().copied().unwrap_or(false)
    }

    /// [`Own::is_own`] for records read together: one wait, for the appends in
    /// flight when they were read, answers them all (none, when each is known).
    pub async fn which(&self, seqs: &[u64]) -> Vec<bool> {
        let horizon = {
            let mut state = self.lock();
            if seqs.iter().all(|seq| state.seqs.contains(seq)) {
                return seqs.iter().map(|seq| state.seqs.remove(seq)).collect();
            }
            state.next_ticket
        };
        loop {
            let changed = self.changed.notified();
            {
                let mut state = self.lock();
                if state.in_flight.range(..horizon).next().is_none() {
                    return seqs.iter().map(|seq| state.seqs.remove(seq)).collect();
                }
            }
            changed.await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[tokio::test]
    async fn a_record_read_before_its_append_was_answered_is_known_as_own() {
        let own = std::sync::Arc::new(Own::default());
        let ticket = own.start();
        let asking = {
            let own = std::sync::Arc::clone(&own);
            tokio::spawn(async move { own.is_own(7).await })
        };
        tokio::task::yield_now().await;
        assert!(!asking.is_finished(), "the answer waits for the append in flight");
        ticket.answered([7, 8]);
        assert!(asking.await.unwrap());
        assert!(own.is_own(8).await);
        assert!(!own.is_own(8).await, "forgotten once given");
        drop(own.start());
        assert!(!own.is_own(9).await, "an append given up counts as another's");
        let before = own.start();
        let asking = {
            let own = std::sync::Arc::clone(&own);
            tokio::spawn(async move { own.is_own(12).await })
        };
        tokio::task::yield_now().await;
        // An append that starts after the record was read does not hold the answer back.
        let _after = own.start();
        before.answered([11]);
        assert!(!asking.await.unwrap());
    }
}
