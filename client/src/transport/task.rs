//! One owned background task: a cancellation token and its handle, together. `shutdown`
//! cancels and waits; dropping it (an early return, an error path) cancels and aborts, so a
//! task never outlives its owner. Replaces the hand-written "token + JoinHandle" pairs of
//! the path selector, the tunnel server and the WebRTC bridge.

use std::future::Future;

use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};

#[derive(Debug)]
pub(crate) struct OwnedTask {
    cancel: CancellationToken,
    handle: AbortOnDropHandle<()>,
}

impl OwnedTask {
    /// Spawn `work`, handing it the token it must stop on.
    pub(crate) fn spawn<F, Fut>(work: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let cancel = CancellationToken::new();
        let handle = AbortOnDropHandle::new(tokio::spawn(work(cancel.clone())));
        Self { cancel, handle }
    }

    /// Wait for the task to end by itself (cancel-safe; the task keeps running if this is
    /// dropped).
    pub(crate) async fn finished(&mut self) {
        let _ = (&mut self.handle).await;
    }

    /// Ask the task to stop and wait until it has.
    pub(crate) async fn shutdown(mut self) {
        self.cancel.cancel();
        let _ = (&mut self.handle).await;
    }
}

impl Drop for OwnedTask {
    fn drop(&mut self) {
        // The handle aborts the task as it drops; the token tells its children too.
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Dropped without `shutdown` (an early return on an error path), the task is gone all
    /// the same: the listener it owned is closed.
    #[tokio::test]
    async fn dropping_the_owner_stops_the_task() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = OwnedTask::spawn(move |cancel| async move {
            loop {
                tokio::select! {
                    _ = listener.accept() => {}
                    () = cancel.cancelled() => return,
                }
            }
        });
        assert!(tokio::net::TcpStream::connect(addr).await.is_ok(), "serving");
        drop(task);
        let mut refused = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(refused, "the task outlived its owner");
    }

    #[tokio::test]
    async fn shutdown_waits_for_the_task_to_finish() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = OwnedTask::spawn(move |cancel| async move {
            cancel.cancelled().await;
            let _ = tx.send(());
        });
        task.shutdown().await;
        assert!(
            rx.await.is_ok(),
            "the task ran to its end before shutdown returned"
        );
    }
}
