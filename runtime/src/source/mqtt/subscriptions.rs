//! Which MQTT subscriptions wasmrule holds, and which copy of a message to keep when
//! overlapping subscriptions deliver it more than once.
//!
//! Rules change at run time, so subscriptions do too. A change subscribes to the new
//! filters first and unsubscribes the old ones after, so no message falls in a gap;
//! while both exist, a broker may send two copies of one message (mosquitto does by
//! default). With MQTT 5 every subscription carries a subscription identifier, and a
//! message is kept only from the copy that carries the lowest identifier among our
//! subscriptions matching its topic. A subscription being removed stays in the table
//! until the broker's UNSUBACK: copies sent before it are still recognised as
//! duplicates. Partially overlapping rule filters (`a/+` and `+/b`) are handled the
//! same way. MQTT 3.1.1 has no identifiers: there every copy is kept (docs/events.md).
//!
//! With a share group (`mqtt.share_group`) every filter is subscribed as
//! `$share/<group>/<filter>`; messages still arrive with their real topic and the table
//! keeps matching the plain filters. Each shared subscription hands a message to one
//! member of the group, so with overlapping filters the copies may reach different
//! instances, and each instance decides alone. The copy to keep is then the one of the
//! matching filter that sorts first as a string, not the one of the lowest identifier:
//! identifiers are given per instance in the order its rules loaded, so two instances
//! may number the same filters differently and each drop the copy the other dropped
//! too. The string order is the same everywhere (while rule changes reach the
//! instances at different moments, a message may be kept twice, never dropped by all).
//!
//! This file is pure bookkeeping; `follower.rs` sends the requests it returns.

use std::collections::VecDeque;

use crate::topic::TopicIndex;

/// A request for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubRequest {
    Subscribe { filter: String, id: Option<usize> },
    Unsubscribe { filter: String },
}

#[derive(Debug, Clone)]
struct Entry {
    filter: String,
    id: usize,
    // False once an unsubscribe has been requested.
    wanted: bool,
}

/// The subscription table.
#[derive(Debug)]
pub struct SubTable {
    use_ids: bool,
    /// Subscribe as `$share/<group>/<filter>`.
    share_group: Option<String>,
    next_id: usize,
    entries: Vec<Entry>,
    /// Per filter, the rank its copies are kept by (lowest first) and its identifier.
    index: TopicIndex<(Rank, usize)>,
    // Unsubscribes requested but not yet given a packet id, oldest first.
    unsub_unsent: VecDeque<String>,
    // Unsubscribes sent, by packet id.
    unsub_sent: Vec<(u16, String)>,
}

impl SubTable {
    /// A table for MQTT 5 (`use_ids`) or 3.1.1, in `share_group` if given.
    pub fn new(use_ids: bool, share_group: Option<String>) -> Self {
        SubTable {
            use_ids,
            share_group,
            next_id: 1,
            entries: Vec::new(),
            index: TopicIndex::new(),
            unsub_unsent: VecDeque::new(),
            unsub_sent: Vec::new(),
        }
    }

    /// The filters wanted now.
    #[cfg(test)]
    pub fn wanted(&self) -> Vec<&str> {
        self.entries
            .iter()
            .filter(|e| e.wanted)
            .map(|e| e.filter.as_str())
            .collect()
    }

    /// Makes `desired` the wanted set; returns the requests to send, subscribes first.
    pub fn set_desired(&mut self, desired: &[String]) -> Vec<SubRequest> {
        let mut subs = Vec::new();
        let mut unsubs = Vec::new();
        let (use_ids, share) = (self.use_ids, self.share_group.as_deref());
        for f in desired {
            match self.entries.iter_mut().find(|e| &e.filter == f) {
                Some(e) if e.wanted => {}
                Some(e) => {
                    // Wanted again before the unsubscribe was acknowledged: subscribe
                    // anew under a fresh id, so late copies of the old one are dropped.
                    e.wanted = true;
                    e.id = self.next_id;
                    self.next_id += 1;
                    subs.push(subscribe_request(use_ids, share, f, e.id));
                }
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.entries.push(Entry {
                        filter: f.clone(),
                        id,
                        wanted: true,
                    });
                    subs.push(subscribe_request(use_ids, share, f, id));
                }
            }
        }
        for e in &mut self.entries {
            if e.wanted && !desired.contains(&e.filter) {
                e.wanted = false;
                unsubs.push(SubRequest::Unsubscribe {
                    filter: wire_filter(share, &e.filter),
                });
                self.unsub_unsent.push_back(e.filter.clone());
            }
        }
        if !self.use_ids {
            // Without identifiers there is nothing to recognise duplicates by.
            self.entries.retain(|e| e.wanted);
            self.unsub_unsent.clear();
        }
        self.reindex();
        subs.extend(unsubs);
        subs
    }

    /// After a (re)connection: forget unsubscribes in flight and subscribe to every
    /// wanted filter again (harmless if the broker kept the session: same filter, same
    /// identifier, and retained messages are not resent).
    pub fn on_connected(&mut self) -> Vec<SubRequest> {
        self.entries.retain(|e| e.wanted);
        self.unsub_unsent.clear();
        self.unsub_sent.clear();
        self.reindex();
        self.entries
            .iter()
            .map(|e| subscribe_request(self.use_ids, self.share_group.as_deref(), &e.filter, e.id))
            .collect()
    }

    /// The event loop sent an UNSUBSCRIBE with packet id `pkid` (in request order).
    pub fn on_unsubscribe_sent(&mut self, pkid: u16) {
        if let Some(f) = self.unsub_unsent.pop_front() {
            self.unsub_sent.push((pkid, f));
        }
    }

    /// The broker acknowledged UNSUBSCRIBE `pkid`: no copy for it can follow.
    pub fn on_unsuback(&mut self, pkid: u16) {
        if let Some(i) = self.unsub_sent.iter().position(|(p, _)| *p == pkid) {
            let (_, filter) = self.unsub_sent.swap_remove(i);
            self.entries.retain(|e| e.wanted || e.filter != filter);
            self.reindex();
        }
    }

    fn reindex(&mut self) {
        let mut index = TopicIndex::new();
        for e in &self.entries {
            let rank = match self.share_group {
                Some(_) => Rank::Filter(e.filter.clone()),
                None => Rank::Id(e.id),
            };
            index.insert(&e.filter, (rank, e.id));
        }
        self.index = index;
    }

    /// Whether to handle a copy of a message on `topic` that arrived with the
    /// subscription identifiers `ids` (empty for MQTT 3.1.1 or brokers without them).
    pub fn should_handle(&self, topic: &str, ids: &[usize]) -> bool {
        if ids.is_empty() {
            return true;
        }
        let mut lowest: Option<&(Rank, usize)> = None;
        self.index.for_each_match(topic, |r| {
            lowest = Some(lowest.map_or(r, |l| l.min(r)));
        });
        match lowest {
            Some((_, id)) => ids.contains(id),
            // From a subscription we no longer know (an old session): keep it; rules
            // decide whether anything wants it.
            None => true,
        }
    }
}

/// Which of the matching subscriptions' copies to keep: the lowest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    /// The oldest subscription (one instance).
    Id(usize),
    /// The filter that sorts first (a share group: module docs).
    Filter(String),
}

fn subscribe_request(use_ids: bool, share: Option<&str>, filter: &str, id: usize) -> SubRequest {
    SubRequest::Subscribe {
        filter: wire_filter(share, filter),
        id: use_ids.then_some(id),
    }
}

/// The filter as sent to the broker.
fn wire_filter(share: Option<&str>, filter: &str) -> String {
    match share {
        Some(group) => format!("$share/{group}/{filter}"),
        None => filter.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn subscribes_before_unsubscribing() {
        let mut t = SubTable::new(true, None);
        let r = t.set_desired(&s(&["store-last-message/+"]));
        assert_eq!(
            r,
            vec![SubRequest::Subscribe {
                filter: "store-last-message/+".into(),
                id: Some(1)
            }]
        );
        let r = t.set_desired(&s(&["#"]));
        assert_eq!(
            r,
            vec![
                SubRequest::Subscribe {
                    filter: "#".into(),
                    id: Some(2)
                },
                SubRequest::Unsubscribe {
                    filter: "store-last-message/+".into()
                },
            ]
        );
        assert_eq!(t.wanted(), vec!["#"]);
    }

    #[test]
    fn overlapping_copies_are_handled_once() {
        let mut t = SubTable::new(true, None);
        t.set_desired(&s(&["store-last-message/+"]));
        t.set_desired(&s(&["#"]));
        let topic = "store-last-message/d1";
        // Before UNSUBACK both subscriptions exist: keep the copy of id 1 only.
        assert!(t.should_handle(topic, &[1]));
        assert!(!t.should_handle(topic, &[2]));
        assert!(t.should_handle(topic, &[1, 2]));
        // Topics only the new filter matches.
        assert!(t.should_handle("other", &[2]));
        t.on_unsubscribe_sent(7);
        t.on_unsuback(7);
        // After it, a late copy of id 1 is a duplicate; id 2 is the one.
        assert!(!t.should_handle(topic, &[1]));
        assert!(t.should_handle(topic, &[2]));
    }

    #[test]
    fn partial_overlap_keeps_one_copy() {
        let mut t = SubTable::new(true, None);
        t.set_desired(&s(&["a/+", "+/b"]));
        let kept = [&[1][..], &[2]]
            .iter()
            .filter(|ids| t.should_handle("a/b", ids))
            .count();
        assert_eq!(kept, 1);
        assert!(t.should_handle("a/c", &[1]));
        assert!(t.should_handle("c/b", &[2]));
    }

    #[test]
    fn reconnect_resubscribes_with_same_ids() {
        let mut t = SubTable::new(true, None);
        t.set_desired(&s(&["a/#", "b"]));
        t.set_desired(&s(&["a/#"]));
        let r = t.on_connected();
        assert_eq!(
            r,
            vec![SubRequest::Subscribe {
                filter: "a/#".into(),
                id: Some(1)
            }]
        );
        // "b" is gone entirely: a stray copy from the old session is kept.
        assert!(t.should_handle("b", &[2]));
    }

    #[test]
    fn rewanted_filter_gets_a_new_id() {
        let mut t = SubTable::new(true, None);
        t.set_desired(&s(&["a"]));
        t.set_desired(&s(&[]));
        let r = t.set_desired(&s(&["a"]));
        assert_eq!(
            r,
            vec![SubRequest::Subscribe {
                filter: "a".into(),
                id: Some(2)
            }]
        );
        assert!(!t.should_handle("a", &[1]));
    }

    #[test]
    fn mqtt311_has_no_ids() {
        let mut t = SubTable::new(false, None);
        let r = t.set_desired(&s(&["a"]));
        assert_eq!(
            r,
            vec![SubRequest::Subscribe {
                filter: "a".into(),
                id: None
            }]
        );
        t.set_desired(&s(&["b"]));
        assert_eq!(t.wanted(), vec!["b"]);
        assert!(t.should_handle("a", &[]));
    }

    #[test]
    fn share_group_subscribes_shared_and_matches_plain() {
        let g = Some("wasmrule".to_string());
        let mut t = SubTable::new(true, g.clone());
        let r = t.set_desired(&s(&["seq/#"]));
        assert_eq!(
            r,
            vec![SubRequest::Subscribe {
                filter: "$share/wasmrule/seq/#".into(),
                id: Some(1)
            }]
        );
        // Messages arrive with their real topic.
        assert!(t.should_handle("seq/1", &[1]));
        assert_eq!(
            t.on_connected(),
            vec![SubRequest::Subscribe {
                filter: "$share/wasmrule/seq/#".into(),
                id: Some(1)
            }]
        );
        let r = t.set_desired(&s(&[]));
        assert_eq!(
            r,
            vec![SubRequest::Unsubscribe {
                filter: "$share/wasmrule/seq/#".into()
            }]
        );
        let mut t = SubTable::new(false, g);
        let r = t.set_desired(&s(&["a/+"]));
        assert_eq!(
            r,
            vec![SubRequest::Subscribe {
                filter: "$share/wasmrule/a/+".into(),
                id: None
            }]
        );
        assert!(t.should_handle("a/b", &[]));
    }

    /// Two instances that numbered the same overlapping filters differently: every
    /// way the broker may hand out the two copies, exactly one is kept.
    #[test]
    fn share_group_keeps_one_copy_across_instances() {
        let g = || Some("g".to_string());
        let mut a = SubTable::new(true, g());
        a.set_desired(&s(&["a/+", "+/b"]));
        let mut b = SubTable::new(true, g());
        b.set_desired(&s(&["+/b"]));
        b.set_desired(&s(&["+/b", "a/+"]));
        // ids: a has a/+ = 1, +/b = 2; b has +/b = 1, a/+ = 2 (b's first was reused).
        let id = |t: &SubTable, f: &str| t.entries.iter().find(|e| e.filter == f).unwrap().id;
        assert_ne!(id(&a, "a/+"), id(&b, "a/+"));
        for (via_plus_b, via_a_plus) in [(&a, &a), (&a, &b), (&b, &a), (&b, &b)] {
            let kept = [
                via_plus_b.should_handle("a/b", &[id(via_plus_b, "+/b")]),
                via_a_plus.should_handle("a/b", &[id(via_a_plus, "a/+")]),
            ];
            assert_eq!(kept.iter().filter(|k| **k).count(), 1, "{kept:?}");
        }
    }
}
