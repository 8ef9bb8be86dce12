//! The output stream as a bounded queue that a consumer pulls from at its
//! own pace (the Python bindings' iterators): [`Listener`].

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::device::{ConnectOptions, Link};
use crate::error::Result;

use super::client::{listen, RemoteIoOptions};
use super::stream::OutputEvent;

/// What did not fit in the queue, reported once there is room again.
#[derive(Debug, Default)]
struct Overflow {
    /// Entries dropped (lines, and the gaps they fell into).
    missed: u64,
    /// A restart dropped meanwhile (its boot count).
    restarted: Option<u64>,
}

type Sender = mpsc::Sender<Result<OutputEvent>>;

impl Overflow {
    /// Queue `ev` after what overflowed before; drop it (counted) when the
    /// queue is full.
    fn offer(&mut self, tx: &Sender, ev: &OutputEvent) {
        if self.flush(tx) && tx.try_send(Ok(ev.clone())).is_ok() {
            return;
        }
        match ev {
            OutputEvent::Line { .. } => self.missed += 1,
            OutputEvent::Gap { missed } => self.missed += missed,
            OutputEvent::Restarted { boot } => self.restarted = Some(*boot),
            // The listener reconnects by itself: nothing to report later.
            _ => {}
        }
    }

    /// Queue the gap (then the restart) that overflowed; whether all fit.
    fn flush(&mut self, tx: &Sender) -> bool {
        if self.missed > 0 {
            let gap = OutputEvent::Gap {
                missed: self.missed,
            };
            if tx.try_send(Ok(gap)).is_err() {
                return false;
            }
            self.missed = 0;
        }
        if let Some(boot) = self.restarted {
            if tx.try_send(Ok(OutputEvent::Restarted { boot })).is_err() {
                return false;
            }
            self.restarted = None;
        }
        true
    }
}

/// Stops a [`Listener`] from anywhere (another thread, while the listener
/// waits in [`Listener::next`]).
#[derive(Debug, Clone)]
pub struct StopHandle(watch::Sender<bool>);

impl StopHandle {
    /// Stop the listener: its connection closes, and [`Listener::next`]
    /// returns what was queued, then `None`.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// A [`listen`] running in the background, its events queued for a
/// consumer that pulls them with [`Listener::next`].
///
/// The queue holds at most `capacity` events, so a slow consumer costs
/// bounded memory: while the queue is full, lines are dropped and counted,
/// and reported as one [`OutputEvent::Gap`] before the next event that fits
/// (a restart meanwhile as an [`OutputEvent::Restarted`] after that gap;
/// link drops meanwhile are not reported). Stopping the listener
/// ([`StopHandle::stop`], [`Listener::close`]) or dropping it ends the
/// background task and closes its connection.
#[derive(Debug)]
pub struct Listener {
    rx: mpsc::Receiver<Result<OutputEvent>>,
    stop: StopHandle,
    task: Option<JoinHandle<()>>,
}

impl Listener {
    /// Start listening to the device at `link` on the current tokio
    /// runtime, queueing at most `capacity` events (at least 1).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn spawn(
        link: Link,
        connect: ConnectOptions,
        opts: RemoteIoOptions,
        capacity: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            let gone = tx.clone();
            let stop = async move {
                tokio::select! {
                    () = gone.closed() => {}
                    _ = stop_rx.wait_for(|stopped| *stopped) => {}
                }
            };
            let mut overflow = Overflow::default();
            let res = {
                let mut on_event = |ev: &OutputEvent| overflow.offer(&tx, ev);
                listen(&link, &connect, &opts, &mut on_event, stop).await
            };
            if let Err(e) = res {
                // What overflowed comes first; then the error that ended it.
                if overflow.missed > 0 {
                    let missed = overflow.missed;
                    let _ = tx.send(Ok(OutputEvent::Gap { missed })).await;
                }
                let _ = tx.send(Err(e)).await;
            }
        });
        Self {
            rx,
            stop: StopHandle(stop_tx),
            task: Some(task),
        }
    }

    /// The next event; an error that reconnecting cannot mend
    /// (authentication, a runtime without RemoteIO) once, then `None`, as
    /// after a stop.
    pub async fn next(&mut self) -> Option<Result<OutputEvent>> {
        self.rx.recv().await
    }

    /// A handle that stops this listener.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Stop the listener, wait until its connection is closed, and drop
    /// what is queued: [`Listener::next`] then returns `None`.
    pub async fn close(&mut self) {
        self.stop.stop();
        self.rx.close();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        while self.rx.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64) -> OutputEvent {
        OutputEvent::Line {
            seq,
            text: format!("{seq}\n"),
        }
    }

    #[test]
    fn a_full_queue_turns_lines_into_one_gap() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut o = Overflow::default();
        for seq in 0..5 {
            o.offer(&tx, &line(seq));
        }
        o.offer(&tx, &OutputEvent::Restarted { boot: 7 });
        o.offer(&tx, &line(0));
        assert_eq!(rx.try_recv().unwrap().unwrap(), line(0));
        assert_eq!(rx.try_recv().unwrap().unwrap(), line(1));
        // Room for the gap and the restart only: the next line counts too.
        o.offer(&tx, &line(1));
        o.offer(&tx, &line(2));
        assert_eq!(
            rx.try_recv().unwrap().unwrap(),
            OutputEvent::Gap { missed: 4 }
        );
        assert_eq!(
            rx.try_recv().unwrap().unwrap(),
            OutputEvent::Restarted { boot: 7 }
        );
        o.offer(&tx, &line(3));
        assert_eq!(
            rx.try_recv().unwrap().unwrap(),
            OutputEvent::Gap { missed: 2 }
        );
        assert_eq!(rx.try_recv().unwrap().unwrap(), line(3));
        assert!(rx.try_recv().is_err());
    }
}
