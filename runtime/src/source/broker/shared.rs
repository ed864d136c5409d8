//! `$share/<group>/<filter>` subscriptions on the embedded broker. rmqtt routes them
//! (its `shared-subscription` feature) and asks an implementation of its
//! `SharedSubscription` trait which member of a group gets each message; its default
//! answers "not supported", and its own choosers live in a separate plugin crate. This
//! one is a few lines: members in turn, online ones first; an offline member (a kept
//! session) only when no member is online, so its session queues the message.

use std::sync::atomic::{AtomicUsize, Ordering};

use rmqtt::context::ServerContext;
use rmqtt::subscribe::SharedSubscription;
use rmqtt::types::{
    ClientId, Id, IsOnline, NodeId, SharedGroup, SubscriptionIdentifier, SubscriptionOptions,
    TopicName,
};

/// Round robin over a group's members, online ones first.
#[derive(Default)]
pub(super) struct RoundRobin {
    next: AtomicUsize,
}

type Member = (
    NodeId,
    ClientId,
    SubscriptionOptions,
    Option<Vec<SubscriptionIdentifier>>,
    Option<IsOnline>,
);

#[async_trait::async_trait]
impl SharedSubscription for RoundRobin {
    fn is_supported(&self) -> bool {
        true
    }

    async fn choice(
        &self,
        _scx: &ServerContext,
        _group: &SharedGroup,
        _publisher: &Id,
        _topic: &TopicName,
        members: &[Member],
    ) -> Option<(usize, IsOnline)> {
        pick(
            self.next.fetch_add(1, Ordering::Relaxed),
            members.len(),
            |i| members[i].4 == Some(true),
        )
    }
}

/// Starting at `start`, the first of `n` members that is online, else the one at
/// `start`.
fn pick(start: usize, n: usize, online: impl Fn(usize) -> bool) -> Option<(usize, IsOnline)> {
    if n == 0 {
        return None;
    }
    let first = start % n;
    Some(
        (0..n)
            .map(|k| (first + k) % n)
            .find(|&i| online(i))
            .map_or((first, false), |i| (i, true)),
    )
}

#[cfg(test)]
mod tests {
    use super::pick;

    #[test]
    fn in_turn_online_first() {
        let online = [true, false, true];
        let picks: Vec<_> = (0..4).map(|s| pick(s, 3, |i| online[i])).collect();
        assert_eq!(
            picks,
            vec![
                Some((0, true)),
                Some((2, true)),
                Some((2, true)),
                Some((0, true))
            ]
        );
        assert_eq!(pick(1, 2, |_| false), Some((1, false)));
        assert_eq!(pick(0, 0, |_| true), None);
    }
}
