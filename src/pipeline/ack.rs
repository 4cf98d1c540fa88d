//! Delivery acknowledgement: a receiver that must know when its data has left the agent
//! (the log tailer, to advance checkpoints only after export) attaches an `Ack` to a batch.
//! Every copy made by batching, splitting and fan-out shares it; when the last copy is
//! dropped the receiver is told whether every exporter delivered it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

type Notify = Box<dyn FnOnce(bool) + Send>;

struct AckState {
    failed: AtomicBool,
    notify: Mutex<Option<Notify>>,
}

impl Drop for AckState {
    fn drop(&mut self) {
        let notify = self
            .notify
            .get_mut()
            .map(Option::take)
            .unwrap_or_else(|p| p.into_inner().take());
        if let Some(notify) = notify {
            notify(!self.failed.load(Ordering::Acquire));
        }
    }
}

#[derive(Clone)]
pub struct Ack(Arc<AckState>);

impl Ack {
    /// `notify(delivered)` runs once, when the last copy of the acknowledged data is dropped.
    pub fn new(notify: impl FnOnce(bool) + Send + 'static) -> Ack {
        Ack(Arc::new(AckState {
            failed: AtomicBool::new(false),
            notify: Mutex::new(Some(Box::new(notify))),
        }))
    }

    /// Marks the data as not delivered (dropped or failed permanently somewhere).
    pub fn fail(&self) {
        self.0.failed.store(true, Ordering::Release);
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ack")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn notifies_once_when_the_last_copy_drops() {
        let (tx, rx) = mpsc::channel();
        let ack = Ack::new(move |ok| tx.send(ok).unwrap());
        let copy = ack.clone();
        drop(ack);
        assert!(rx.try_recv().is_err());
        drop(copy);
        assert_eq!(rx.try_recv(), Ok(true));
    }

    #[test]
    fn a_failure_in_any_copy_is_reported() {
        let (tx, rx) = mpsc::channel();
        let ack = Ack::new(move |ok| tx.send(ok).unwrap());
        let copy = ack.clone();
        copy.fail();
        drop(copy);
        drop(ack);
        assert_eq!(rx.try_recv(), Ok(false));
    }
}
