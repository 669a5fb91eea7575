//! The write fence of a leader: until when this replica certainly holds the leader Lease, by its own
//! monotonic clock. The Lease elector extends it after each successful renewal (to the instant the
//! renewal was *sent* plus the renew deadline, which is shorter than the Lease's duration: another
//! replica, judging by the local time at which it saw the renewal, cannot take over before then).
//! Every write of a reconcile happens inside [`Fence::guard`], which drops the reconcile the moment
//! the fence passes: no write leaves after it, whatever was in flight.
//!
//! Without leader election the fence is [`Fence::unfenced`]: always held.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

/// Until when writes are allowed (`None`: always).
#[derive(Debug, Clone)]
pub struct Fence {
    until: Arc<watch::Sender<Option<Instant>>>,
}

impl Default for Fence {
    fn default() -> Self {
        Fence::unfenced()
    }
}

/// The fence passed before the guarded work finished: it was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fenced;

impl Fence {
    /// Always held (no leader election).
    pub fn unfenced() -> Self {
        Fence {
            until: Arc::new(watch::channel(None).0),
        }
    }

    /// Not held until [`Fence::extend`] is called (a replica waiting for the Lease).
    pub fn leased() -> Self {
        Fence {
            until: Arc::new(watch::channel(Some(Instant::now())).0),
        }
    }

    /// Holds until `until` (never moves an unfenced fence, never moves a deadline back).
    pub fn extend(&self, until: Instant) {
        self.until.send_if_modified(|current| match current {
            Some(at) if *at < until => {
                *at = until;
                true
            }
            _ => false,
        });
    }

    /// Makes the fence pass at `at` at the latest (also an unfenced one): a stop with a grace.
    pub fn close_at(&self, at: Instant) {
        self.until.send_if_modified(|current| match current {
            Some(until) if *until <= at => false,
            _ => {
                *current = Some(at);
                true
            }
        });
    }

    /// Ends the hold now (the Lease was lost to another replica).
    pub fn revoke(&self) {
        self.until.send_if_modified(|current| match current {
            Some(at) => {
                *at = Instant::now().min(*at);
                true
            }
            None => false,
        });
    }

    /// Until when writes are allowed (`None`: always).
    pub fn deadline(&self) -> Option<Instant> {
        *self.until.borrow()
    }

    /// Whether writes are allowed now.
    pub fn held(&self) -> bool {
        self.deadline().is_none_or(|at| Instant::now() < at)
    }

    /// Resolves once the fence has passed (never, when unfenced).
    pub async fn lost(&self) {
        let mut rx = self.until.subscribe();
        loop {
            let deadline = *rx.borrow_and_update();
            match deadline {
                Some(at) if Instant::now() >= at => return,
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(tokio::time::Instant::from_std(at)) => {}
                        _ = rx.changed() => {}
                    }
                }
                None => {
                    if rx.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }

    /// Runs `work` while the fence holds: it is dropped (with whatever request it had in flight)
    /// the moment the fence passes, and is not started when it already has.
    pub async fn guard<T>(&self, work: impl Future<Output = T>) -> Result<T, Fenced> {
        if !self.held() {
            return Err(Fenced);
        }
        tokio::select! {
            biased;
            _ = self.lost() => Err(Fenced),
            out = work => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn unfenced_always_holds() {
        let fence = Fence::unfenced();
        assert!(fence.held());
        assert_eq!(fence.guard(async { 7 }).await, Ok(7));
        fence.revoke();
        assert!(fence.held(), "nothing to revoke without leader election");
    }

    #[tokio::test]
    async fn a_leased_fence_holds_until_its_deadline_and_drops_the_work() {
        let fence = Fence::leased();
        assert!(!fence.held(), "not held before the first renewal");
        assert_eq!(fence.guard(async { 1 }).await, Err(Fenced));
        fence.extend(Instant::now() + Duration::from_millis(300));
        assert!(fence.held());
        let started = Instant::now();
        let cut = fence
            .guard(tokio::time::sleep(Duration::from_secs(30)))
            .await;
        assert_eq!(cut, Err(Fenced));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!fence.held());
        // An extension while work runs keeps it running.
        fence.extend(Instant::now() + Duration::from_millis(200));
        let extender = fence.clone();
        let ext = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            extender.extend(Instant::now() + Duration::from_secs(10));
        });
        let done = fence
            .guard(tokio::time::sleep(Duration::from_millis(400)))
            .await;
        assert_eq!(done, Ok(()));
        ext.await.expect("extender");
        fence.revoke();
        assert!(!fence.held());
    }

    #[tokio::test]
    async fn an_unfenced_fence_can_be_closed_with_a_grace() {
        let fence = Fence::unfenced();
        fence.close_at(Instant::now() + Duration::from_millis(200));
        assert!(fence.held());
        let cut = fence
            .guard(tokio::time::sleep(Duration::from_secs(30)))
            .await;
        assert_eq!(cut, Err(Fenced));
        // Closing later does not reopen it.
        fence.close_at(Instant::now() + Duration::from_secs(60));
        assert!(!fence.held());
    }
}
