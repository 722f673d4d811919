//! 50 rounds of DeleteVolume, ExtendVolume and CreateAttachment sent at once
//! on one available volume: the status changes are compare-and-set, so exactly
//! one wins each round, the others get FAILED_PRECONDITION (or NOT_FOUND once a
//! winning delete removed the volume), and the volume ends as the winner left
//! it (gone, one GiB larger, or in use until detached). The one serializable
//! exception, an extend that finished before a slower racer even read the
//! volume, is told apart by the second winner finding the larger volume.

use std::time::Duration;

use scoria_proto::v1::VolumeStatus;
use scoria_tests::stack::{DbKind, Stack};
use tonic::{Code, Status};

use crate::support::{Api, CHAOS_ENV, assert_settled, enforce_quota, request_id, serial};

const ROUNDS: usize = 50;
const GIB: u64 = 1 << 30;

/// A loser gets FAILED_PRECONDITION; after a delete won, NOT_FOUND too (the
/// volume may be gone by the time the loser reads it).
fn loser(op: &str, result: &Result<(), Status>, gone: bool) {
    match result {
        Err(status) if status.code() == Code::FailedPrecondition => {}
        Err(status) if gone && status.code() == Code::NotFound => {}
        other => panic!("{op} lost the race but answered {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_delete_extend_attach_have_exactly_one_winner() {
    let _serial = serial().await;
    let stack = Stack::start_with(DbKind::Sqlite, CHAOS_ENV).await;
    enforce_quota(&stack).await;
    let api = Api::new(&stack);
    let mut current: Option<(String, u64)> = None;
    let mut wins = [0usize; 3];
    let mut extend_first = 0;
    for round in 0..ROUNDS {
        let (id, size) = match current.take() {
            Some(volume) => volume,
            None => {
                let created = api
                    .create(1, &request_id("race", round))
                    .await
                    .unwrap_or_else(|s| panic!("create: {s:?}\n{}", stack.logs()));
                api.wait_status(&created.id, VolumeStatus::Available).await;
                (created.id, 1)
            }
        };
        // The three are in flight together, but the attach path does more
        // before its compare-and-set: in turn, delete or attach starts a few
        // milliseconds ahead, so every kind of winner is exercised. (Never the
        // extend: a file grows in less than that, and a delete arriving after
        // the extend finished rightly wins too.)
        let ahead = round % 3;
        let lag = match ahead {
            1 => Duration::ZERO,
            _ => Duration::from_millis([1, 3, 8][(round / 3) % 3]),
        };
        let start = |op: usize| async move {
            if op != ahead {
                tokio::time::sleep(lag).await;
            }
        };
        let (deleted, extended, attached) = tokio::join!(
            async {
                start(0).await;
                api.delete(&id).await
            },
            async {
                start(1).await;
                api.extend(&id, size + 1).await
            },
            async {
                start(2).await;
                api.attach(&id, "chaos-host").await
            },
        );
        let winners = [deleted.is_ok(), extended.is_ok(), attached.is_ok()];
        let context = format!(
            "round {round} on {id}: delete {deleted:?}, extend {extended:?}, attach {attached:?}\n{}",
            stack.logs()
        );
        // Exactly one wins while the three overlap. A file grows in a few
        // milliseconds, though, so an extend can finish (the volume available
        // again, one GiB larger) before a racing request that waited on the
        // database's write lock even reads the volume: that one may then win
        // too, as it would one request later. Only that order is serializable
        // (a reserved or deleting volume never comes back available), and it
        // is checked below: the second winner found the larger volume.
        let count = winners.iter().filter(|w| **w).count();
        let extend_then_other = count == 2 && winners[1];
        assert!(
            count == 1 || extend_then_other,
            "not exactly one winner: {context}"
        );
        if extend_then_other {
            extend_first += 1;
        }
        for (won, tally) in winners.iter().zip(wins.iter_mut()) {
            *tally += usize::from(*won);
        }
        let gone = winners[0];
        let attached = attached.map(|a| a.id);
        for (op, won, result) in [
            ("delete", winners[0], deleted.map(|_| ())),
            ("extend", winners[1], extended.map(|_| ())),
            ("attach", winners[2], attached.clone().map(|_| ())),
        ] {
            if !won {
                loser(op, &result, gone);
            }
        }
        let size = if winners[1] { size + 1 } else { size };
        if gone {
            api.wait_gone(&id).await;
            assert!(
                !stack.volume_file(&id).exists(),
                "round {round}: the deleted volume's file is still there"
            );
            continue;
        }
        if let Ok(attachment) = attached {
            let v = api.wait_status(&id, VolumeStatus::InUse).await;
            assert_eq!(v.size_gib, size, "round {round}: {v:?}\n{context}");
            api.detach(&attachment)
                .await
                .unwrap_or_else(|s| panic!("round {round}: detach: {s:?}\n{}", stack.logs()));
        }
        let v = api.wait_status(&id, VolumeStatus::Available).await;
        assert_eq!(v.size_gib, size, "round {round}: {v:?}\n{context}");
        let len = std::fs::metadata(stack.volume_file(&id))
            .expect("volume file")
            .len();
        assert_eq!(len, size * GIB, "round {round}: the file's size");
        current = Some((id, size));
    }
    eprintln!(
        "winners over {ROUNDS} rounds: delete {}, extend {}, attach {}; \
         {extend_first} rounds with an extend finished before a second winner",
        wins[0], wins[1], wins[2]
    );
    assert!(
        wins.iter().all(|w| *w > 0),
        "some operation never won (delete, extend, attach): {wins:?}"
    );
    assert_settled(&stack).await;
}
