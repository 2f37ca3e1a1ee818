//! Picking loopback ports for processes started later (the demo, the evaluation,
//! tests), which must be told their address before they bind it.

use std::net::{SocketAddr, TcpListener};

/// Where the ports this module hands out come from when the kernel's ephemeral
/// range cannot be read: below Linux's default range (32768–60999).
const FALLBACK_EPHEMERAL_START: u16 = 32_768;
/// The lowest port handed out: above the registered services most machines run.
const LOWEST: u16 = 20_000;

/// The ports this process has handed out.
static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> = std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A loopback port that is free now, chosen below the kernel's ephemeral range.
///
/// A port the kernel picks (`bind` to port 0) is an ephemeral one: once released,
/// the kernel may give it to any outgoing connection as its source port, so a
/// service started on it a moment later can find it taken ("Address already in
/// use"), as parallel tests did. A port below that range is never handed out that
/// way; it is picked at random, never twice in one process, and checked free, so
/// only another process picking the same one could take it in between.
pub fn free_loopback_port() -> std::io::Result<SocketAddr> {
    loopback_listener()?.local_addr()
}

/// A listener on a loopback port chosen as [`free_loopback_port`] chooses one,
/// still bound: for a caller that serves in this process, which then has no
/// moment between the pick and the bind for another process to take the port.
pub fn loopback_listener() -> std::io::Result<TcpListener> {
    let start = ephemeral_start().unwrap_or(FALLBACK_EPHEMERAL_START);
    if start > LOWEST + 1_000 {
        let span = u32::from(start - LOWEST);
        for _ in 0..64 {
            let offset = u16::try_from(random_u32() % span).unwrap_or(0);
            let port = LOWEST + offset;
            // Never the same port twice from this process: one picked a moment ago
            // is free again until its service binds it.
            let fresh = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(port);
            if fresh && let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
                return Ok(listener);
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
}

/// The first port of the kernel's ephemeral range (Linux).
fn ephemeral_start() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

fn random_u32() -> u32 {
    let mut bytes = [0u8; 4];
    // Without randomness, the probe order is only less spread out.
    let _ = getrandom::fill(&mut bytes);
    u32::from_le_bytes(bytes)
}

/// The addresses in a comma-separated list (a role with several replicas), trimmed,
/// empty ones left out.
pub fn addresses(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|a| !a.is_empty())
}

/// Which of several replicas' clients a caller uses: the same one until a call to
/// it finds no one there, then the next. Clones share the position.
#[derive(Debug, Clone)]
pub struct Rotation<T> {
    clients: std::sync::Arc<[T]>,
    current: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl<T: Clone> Rotation<T> {
    /// `None` for no clients.
    pub fn new(clients: Vec<T>) -> Option<Self> {
        (!clients.is_empty()).then(|| Self { clients: clients.into(), current: Default::default() })
    }

    /// The client to call now, and which it is.
    pub fn pick(&self) -> (usize, T) {
        let i = self.current.load(std::sync::atomic::Ordering::Relaxed) % self.clients.len();
        (i, self.clients[i].clone())
    }

    /// Client `i` did not answer: later calls go to the next, unless another caller
    /// has moved on already.
    pub fn failed(&self, i: usize) {
        let next = (i + 1) % self.clients.len();
        let _ = self.current.compare_exchange(i, next, std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_moves_on_once_per_failure_of_the_client_in_use() {
        let rotation = Rotation::new(vec!["a", "b", "c"]).unwrap();
        assert_eq!(rotation.pick(), (0, "a"));
        rotation.failed(0);
        // A second caller that saw `a` fail too does not skip `b`.
        rotation.failed(0);
        assert_eq!(rotation.pick(), (1, "b"));
        rotation.failed(1);
        rotation.failed(2);
        assert_eq!(rotation.clone().pick(), (0, "a"));
        assert!(Rotation::<&str>::new(Vec::new()).is_none());
    }

    #[test]
    fn ports_are_free_and_outside_the_ephemeral_range() {
        let start = ephemeral_start().unwrap_or(FALLBACK_EPHEMERAL_START);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let addr = free_loopback_port().unwrap();
            assert!(seen.insert(addr.port()), "{addr} handed out twice");
            assert!(addr.ip().is_loopback());
            assert!(addr.port() >= LOWEST && addr.port() < start, "{addr} is in the ephemeral range from {start}");
            TcpListener::bind(addr).unwrap();
        }
    }
}
