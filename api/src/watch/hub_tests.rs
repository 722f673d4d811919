//! The hub's logic with a fake loader: one read per id per round, no repeat of
//! an unchanged row, the bounded channel, deletes and the watcher limit.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use scoria_common::sync::lock;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use super::hub::{Event, Hub, Limits, Loader};

type Rows = Arc<Mutex<HashMap<String, u32>>>;

fn hub(rows: &Rows, max: usize, buffer: usize) -> (Arc<Hub<u32>>, CancellationToken) {
    let rows = rows.clone();
    let load: Loader<u32> = Arc::new(move |id| {
        let row = lock(&rows).get(&id).copied();
        Box::pin(async move { Ok(row) })
    });
    let stop = CancellationToken::new();
    (
        Hub::new("volume", load, Limits::new(max, buffer), stop.clone()),
        stop,
    )
}

fn set(rows: &Rows, id: &str, value: u32) {
    lock(rows).insert(id.to_owned(), value);
}

#[tokio::test]
async fn the_first_event_is_the_row_and_an_unchanged_row_is_not_sent_again() {
    let rows = Rows::default();
    set(&rows, "v1", 1);
    let (hub, _stop) = hub(&rows, 10, 8);
    let mut sub = hub.watch("v1", 1).expect("watch");
    assert!(hub.round().await);
    assert_eq!(
        sub.next().await.expect("event").expect("ok"),
        Event::Update(1)
    );
    hub.mark(["v1"]);
    hub.mark(["v1"]);
    assert!(hub.round().await);
    set(&rows, "v1", 2);
    hub.mark(["v1"]);
    assert!(hub.round().await);
    assert_eq!(
        sub.next().await.expect("event").expect("ok"),
        Event::Update(2)
    );
}

#[tokio::test]
async fn changes_to_one_id_in_a_round_cost_one_read_for_all_its_watchers() {
    let rows = Rows::default();
    set(&rows, "v1", 1);
    set(&rows, "v2", 1);
    let (hub, _stop) = hub(&rows, 100, 8);
    let subs: Vec<_> = (0..10)
        .map(|_| hub.watch("v1", 1).expect("watch"))
        .collect();
    assert!(hub.round().await);
    let before = hub.reads();
    for _ in 0..5 {
        hub.mark(["v1", "v2"]);
    }
    assert!(hub.round().await);
    // v2 has no watcher: not read at all.
    assert_eq!(hub.reads() - before, 1);
    drop(subs);
}

#[tokio::test]
async fn a_watcher_that_does_not_read_is_dropped_with_resource_exhausted() {
    let rows = Rows::default();
    set(&rows, "v1", 0);
    let (hub, _stop) = hub(&rows, 10, 2);
    let mut slow = hub.watch("v1", 0).expect("watch");
    let mut fast = hub.watch("v1", 0).expect("watch");
    for value in 1..=5 {
        assert!(hub.round().await);
        while let Ok(Some(Ok(_))) =
            tokio::time::timeout(std::time::Duration::from_millis(1), fast.next()).await
        {}
        set(&rows, "v1", value);
        hub.mark(["v1"]);
    }
    assert!(hub.round().await);
    let err = slow.next().await.expect("an item").expect_err("dropped");
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(
        err.message().contains("watcher too slow"),
        "{}",
        err.message()
    );
    assert!(
        slow.next().await.is_none(),
        "the stream ends after the status"
    );
    // The fast one still follows.
    let got = fast.next().await.expect("event").expect("ok");
    assert_eq!(got, Event::Update(5));
}

#[tokio::test]
async fn a_deleted_row_sends_the_last_seen_row_then_ends() {
    let rows = Rows::default();
    set(&rows, "v1", 7);
    let (hub, _stop) = hub(&rows, 10, 8);
    let mut sub = hub.watch("v1", 7).expect("watch");
    assert!(hub.round().await);
    assert_eq!(
        sub.next().await.expect("event").expect("ok"),
        Event::Update(7)
    );
    lock(&rows).remove("v1");
    hub.mark(["v1"]);
    assert!(hub.round().await);
    assert_eq!(
        sub.next().await.expect("event").expect("ok"),
        Event::Deleted(7)
    );
    assert!(sub.next().await.is_none());
}

#[tokio::test]
async fn watchers_beyond_the_limit_are_refused_and_a_dropped_one_frees_its_slot() {
    let rows = Rows::default();
    set(&rows, "v1", 1);
    let (hub, _stop) = hub(&rows, 2, 8);
    let a = hub.watch("v1", 1).expect("first");
    let _b = hub.watch("v1", 1).expect("second");
    let err = hub.watch("v1", 1).err().expect("third refused");
    assert_eq!(err.code(), Code::ResourceExhausted);
    drop(a);
    hub.watch("v1", 1).expect("a slot was freed");
}

#[tokio::test]
async fn mark_all_rereads_every_watched_id_and_shutdown_ends_streams() {
    let rows = Rows::default();
    set(&rows, "v1", 1);
    set(&rows, "v2", 1);
    let (hub, stop) = hub(&rows, 10, 8);
    let mut s1 = hub.watch("v1", 1).expect("watch");
    let _s2 = hub.watch("v2", 1).expect("watch");
    assert!(hub.round().await);
    let _ = s1.next().await;
    set(&rows, "v1", 2);
    let before = hub.reads();
    hub.mark_all();
    assert!(hub.round().await);
    assert_eq!(hub.reads() - before, 2);
    assert_eq!(
        s1.next().await.expect("event").expect("ok"),
        Event::Update(2)
    );
    stop.cancel();
    let err = s1.next().await.expect("an item").expect_err("shutdown");
    assert_eq!(err.code(), Code::Unavailable);
}
