//! The calls of one channel that wait for a reply, by `correlation_id`.
//!
//! A call takes a [`Waiting`] before it publishes: a fresh id and the
//! receiving end of a one-shot slot. The channel's reply consumer hands
//! each reply to [`Replies::deliver`], which takes the slot out under a
//! short lock (never held across an await) and sends the reply into it. An
//! id that is not waiting (late, duplicate, forged, or from another
//! process) is refused, for the caller to drop and count. A call that ends
//! without its reply (timeout, cancelled) removes its slot when its
//! `Waiting` drops, so the table holds at most the calls in flight, which
//! the backend's bulkhead bounds.
//!
//! Ids are `<prefix>.<n>` with a random 64-bit prefix per channel and a
//! counter: unique per attempt, and not guessable by another process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::message::Reply;

/// The waiting calls of one channel.
#[derive(Debug)]
pub struct Replies {
    prefix: String,
    next: AtomicU64,
    waiting: Mutex<Option<HashMap<u64, oneshot::Sender<Reply>>>>,
}

impl Default for Replies {
    fn default() -> Self {
        Self::new()
    }
}

impl Replies {
    /// An empty table with a fresh random prefix.
    pub fn new() -> Self {
        Self {
            prefix: format!("{:016x}", fastrand::u64(..)),
            next: AtomicU64::new(0),
            waiting: Mutex::new(Some(HashMap::new())),
        }
    }

    /// A new id, waiting for its reply; `None` once [`Replies::close`]d.
    pub fn wait(self: &Arc<Self>) -> Option<Waiting> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        self.waiting.lock().as_mut()?.insert(n, sender);
        Some(Waiting { replies: self.clone(), n, receiver: Some(receiver) })
    }

    /// Hands `reply` to the call waiting for `correlation_id`; gives it back
    /// when none is.
    pub fn deliver(&self, correlation_id: &str, reply: Reply) -> Result<(), Reply> {
        let Some(n) = self.parse(correlation_id) else { return Err(reply) };
        let sender = self.waiting.lock().as_mut().and_then(|waiting| waiting.remove(&n));
        match sender {
            // The call may have given up between the lookup and the send.
            Some(sender) => sender.send(reply),
            None => Err(reply),
        }
    }

    /// The channel is gone: every waiting call ends at once (its receiver
    /// sees the slot closed) and no new one may start.
    pub fn close(&self) {
        let waiting = self.waiting.lock().take();
        drop(waiting);
    }

    /// Calls waiting now.
    pub fn len(&self) -> usize {
        self.waiting.lock().as_ref().map_or(0, HashMap::len)
    }

    /// Whether no call waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn id(&self, n: u64) -> String {
        format!("{}.{n:x}", self.prefix)
    }

    fn parse(&self, correlation_id: &str) -> Option<u64> {
        let rest = correlation_id.strip_prefix(self.prefix.as_str())?.strip_prefix('.')?;
        if rest.is_empty() || rest.len() > 16 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(rest, 16).ok()
    }
}

/// A call's place in [`Replies`]; leaving it (drop) gives the place up.
#[derive(Debug)]
pub struct Waiting {
    replies: Arc<Replies>,
    n: u64,
    receiver: Option<oneshot::Receiver<Reply>>,
}

impl Waiting {
    /// The `correlation_id` to publish with.
    pub fn correlation_id(&self) -> String {
        self.replies.id(self.n)
    }

    /// The reply; `None` when the channel closed first.
    pub async fn reply(&mut self) -> Option<Reply> {
        let receiver = self.receiver.as_mut()?;
        let reply = receiver.await.ok();
        self.receiver = None;
        reply
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(waiting) = self.replies.waiting.lock().as_mut() {
            waiting.remove(&self.n);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn reply(status: u16) -> Reply {
        Reply { status: Some(status), content_type: None, body: Bytes::new() }
    }

    #[tokio::test]
    async fn a_reply_reaches_the_call_with_its_id_and_nobody_else() {
        let replies = Arc::new(Replies::new());
        let mut first = replies.wait().unwrap();
        let mut second = replies.wait().unwrap();
        assert_ne!(first.correlation_id(), second.correlation_id());
        assert!(replies.deliver(&second.correlation_id(), reply(201)).is_ok());
        assert_eq!(second.reply().await.and_then(|r| r.status), Some(201));
        let again = replies.deliver(&second.correlation_id(), reply(202));
        assert!(again.is_err(), "a duplicate finds nobody");
        assert!(replies.deliver(&first.correlation_id(), reply(200)).is_ok());
        assert_eq!(first.reply().await.and_then(|r| r.status), Some(200));
    }

    #[test]
    fn late_forged_and_foreign_ids_are_refused() {
        let replies = Arc::new(Replies::new());
        let late = replies.wait().unwrap();
        let id = late.correlation_id();
        drop(late);
        assert!(replies.deliver(&id, reply(200)).is_err(), "the call gave up: late");
        assert!(replies.is_empty(), "a call that leaves frees its place");
        let other = Replies::new();
        let _waiting = replies.wait().unwrap();
        for forged in [
            "".to_string(),
            "1".to_string(),
            other.id(1),
            format!("{}.", replies.prefix),
            format!("{}.zz", replies.prefix),
            format!("{}.{}", replies.prefix, "f".repeat(17)),
        ] {
            assert!(replies.deliver(&forged, reply(200)).is_err(), "{forged:?}");
        }
        assert_eq!(replies.len(), 1, "a forged id takes nothing out");
    }

    #[tokio::test]
    async fn a_closed_channel_ends_every_waiting_call() {
        let replies = Arc::new(Replies::new());
        let mut waiting = replies.wait().unwrap();
        replies.close();
        assert!(waiting.reply().await.is_none());
        assert!(replies.wait().is_none(), "no call starts on a closed channel");
    }
}
