//! The store's contract, one suite run against both stores: SQLite in a
//! file, and Postgres on a real server (`crate::common::pg`). Whatever the
//! engine, `serve` and the workers rely on is asserted here once: creating
//! with idempotency keys, fenced checkpoints, leases and claims, timers
//! coming due, cancellation, paging, counts, and opening a store again.

use handoff::engine::checkpoint::{DurableStatus, Saved};
use handoff::store::postgres::PgStore;
use handoff::store::sqlite::SqliteStore;
use handoff::store::{
    Checkpoint, Claimed, Created, IdempotencyKey, Lease, NewRun, RunFilter, Store, flow_hash,
};
use serde_json::json;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn run(id: &str) -> NewRun {
    NewRun {
        id: id.to_string(),
        flow: "f".into(),
        flow_path: "f.yaml".into(),
        flow_source: "flow: f".into(),
        flow_hash: flow_hash("flow: f"),
        inputs: "{}".into(),
        title: None,
        state: "{}".into(),
        created_ms: 1,
        lease: Lease {
            owner: "me".into(),
            until_ms: 1_000,
        },
        idempotency: None,
    }
}

fn key(k: &str, inputs: &str) -> IdempotencyKey {
    IdempotencyKey {
        scope: "api/f".into(),
        key: k.into(),
        fingerprint: Some(inputs.into()),
    }
}

fn keyed(id: &str, k: &str, inputs: &str) -> NewRun {
    NewRun {
        idempotency: Some(key(k, inputs)),
        ..run(id)
    }
}

/// A waits in a timer until 100, with two events.
fn waiting(id: &str, owner: &str) -> Checkpoint {
    Checkpoint {
        run_id: id.into(),
        owner: owner.into(),
        status: DurableStatus::Waiting,
        step: Some("wait".into()),
        wake_at_ms: Some(100),
        steps_taken: 3,
        state: Some("{\"pc\":2}".into()),
        progress: None,
        waiting_for: None,
        outcome: None,
        events: vec![(1, "e1".into()), (2, "e2".into())],
        updated_ms: 5,
        release: false,
    }
}

/// Creating runs: idempotency keys find the first run, other inputs under
/// the same key are a conflict, and another scope is another start.
async fn creates_once_per_key(store: &dyn Store) {
    assert_eq!(
        store.create(&keyed("a", "k1", "in-1")).await.unwrap(),
        Created::New
    );
    assert_eq!(
        store.create(&keyed("b", "k1", "in-1")).await.unwrap(),
        Created::Existing("a".into())
    );
    assert!(store.load("b").await.unwrap().is_none(), "no second row");
    assert_eq!(
        store.create(&keyed("b", "k1", "in-2")).await.unwrap(),
        Created::Conflict("a".into())
    );
    assert!(store.load("b").await.unwrap().is_none(), "no second row");
    let other_scope = NewRun {
        idempotency: Some(IdempotencyKey {
            scope: "hook/f".into(),
            key: "k1".into(),
            fingerprint: None,
        }),
        ..run("c")
    };
    assert_eq!(store.create(&other_scope).await.unwrap(), Created::New);
    // A key names the run it started; an unknown key, none.
    let hash = other_scope.idempotency.as_ref().unwrap().hash();
    assert_eq!(store.keyed(&hash).await.unwrap(), Some("c".to_string()));
    assert_eq!(
        store.keyed(&key("a", "no-such-key").hash()).await.unwrap(),
        None
    );
    let c = store.load("c").await.unwrap().unwrap();
    assert_eq!(c.status, DurableStatus::Running);
    assert_eq!(c.lease.map(|l| l.owner), Some("me".to_string()));
}

/// Checkpoints: what they write reads back, a step written again after a
/// crash keeps its events once, and timers come due in order.
async fn checkpoints_and_timers(store: &dyn Store) {
    let wait = waiting("a", "me");
    assert_eq!(store.checkpoint(&wait).await.unwrap(), Saved::Saved);
    assert_eq!(store.checkpoint(&wait).await.unwrap(), Saved::Saved);
    let a = store.load("a").await.unwrap().unwrap();
    assert_eq!(a.status, DurableStatus::Waiting);
    assert_eq!((a.wake_at_ms, a.steps_taken), (Some(100), 3));
    assert_eq!(a.state, "{\"pc\":2}");
    assert_eq!(a.progress, None);
    assert_eq!(store.events("a").await.unwrap(), ["e1", "e2"]);
    assert_eq!(
        store.events_after("a", 1).await.unwrap(),
        [(2, "e2".to_string())]
    );
    // A checkpoint of many events (a long `for_each`, say) keeps every one,
    // in order, however many statements it takes; one written again is
    // replaced, not doubled.
    let many = |from: u64, tag: &str| Checkpoint {
        status: DurableStatus::Running,
        wake_at_ms: None,
        events: (from..=250)
            .map(|seq| (seq, format!("{tag}{seq}")))
            .collect(),
        ..waiting("c", "me")
    };
    assert_eq!(store.checkpoint(&many(1, "m")).await.unwrap(), Saved::Saved);
    let all = store.events("c").await.unwrap();
    assert_eq!(all.len(), 250);
    assert_eq!((all[0].as_str(), all[249].as_str()), ("m1", "m250"));
    assert_eq!(
        store.checkpoint(&many(150, "n")).await.unwrap(),
        Saved::Saved
    );
    let all = store.events("c").await.unwrap();
    assert_eq!(all.len(), 250);
    assert_eq!((all[148].as_str(), all[149].as_str()), ("m149", "n150"));
    assert_eq!(all[249], "n250");
    // A checkpoint's events are kept together; read from any number on,
    // each comes with its own.
    let after = store.events_after("c", 200).await.unwrap();
    assert_eq!(after.len(), 50);
    assert_eq!(after[0], (201, "n201".to_string()));
    assert_eq!(after[49], (250, "n250".to_string()));
    let after = store.events_after("c", 148).await.unwrap();
    assert_eq!(
        (&after[0], &after[1]),
        (&(149, "m149".to_string()), &(150, "n150".to_string()))
    );
    assert!(store.events_after("c", 250).await.unwrap().is_empty());
    assert_eq!(store.next_wake().await.unwrap(), Some(100));
    let ids =
        |runs: Vec<handoff::store::StoredRun>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    let me = Lease {
        owner: "me".into(),
        until_ms: 1_000,
    };
    let other = Lease {
        owner: "other".into(),
        until_ms: 2_000,
    };
    assert!(
        store.take_due(99, &me, 10).await.unwrap().is_empty(),
        "not yet"
    );
    assert!(
        store.take_due(100, &other, 10).await.unwrap().is_empty(),
        "held by a live lease"
    );
    // Its holder takes it, and sees how it was held.
    let taken = store.take_due(100, &me, 10).await.unwrap();
    assert_eq!(ids(taken.clone()), ["a"]);
    assert_eq!(taken[0].lease, Some(me.clone()));
    assert_eq!(taken[0].status, DurableStatus::Waiting);
    assert!(store.release("a", "me").await.unwrap());
    assert!(!store.release("a", "me").await.unwrap(), "once");
    // Let go of, it is anyone's: taken, it is held by its taker.
    let taken = store.take_due(100, &other, 10).await.unwrap();
    assert_eq!(
        (ids(taken.clone()), taken[0].lease.clone()),
        (vec!["a".to_string()], None)
    );
    assert_eq!(
        store.load("a").await.unwrap().unwrap().lease,
        Some(other.clone())
    );
    assert!(
        store.take_due(100, &me, 10).await.unwrap().is_empty(),
        "taken"
    );
    assert!(store.release("a", "other").await.unwrap());
    // A running run is due to no one while its lease holds, even its holder;
    // then to anyone, who takes it over.
    let c = "c".to_string();
    assert!(!ids(store.take_due(500, &me, 10).await.unwrap()).contains(&c));
    // Oldest first: c has run since before a's wake.
    assert_eq!(
        ids(store.take_due(1_001, &other, 10).await.unwrap()),
        ["c", "a"]
    );
    assert!(store.release("a", "other").await.unwrap());
    assert_eq!(
        store.load("c").await.unwrap().unwrap().lease,
        Some(other.clone())
    );
    assert_eq!(
        store.claim("c", &me, 1_001, Some("other")).await.unwrap(),
        Claimed::Taken
    );
    let leases = store.leases().await.unwrap();
    assert_eq!(
        leases,
        [(
            "c".to_string(),
            Lease {
                owner: "me".into(),
                until_ms: 1_000
            }
        )]
    );
}

/// A checkpoint between a `for_each`'s items writes its progress alone and
/// keeps the state; the next whole checkpoint clears the progress.
async fn progress_between_items(store: &dyn Store) {
    assert_eq!(store.create(&run("p")).await.unwrap(), Created::New);
    let mut light = waiting("p", "me");
    light.state = None;
    light.progress = Some("{\"last_seq\":9}".into());
    light.events = vec![(3, "e3".into())];
    assert_eq!(store.checkpoint(&light).await.unwrap(), Saved::Saved);
    let a = store.load("p").await.unwrap().unwrap();
    assert_eq!(a.state, "{}", "the state written at the start, kept");
    assert_eq!(a.progress.as_deref(), Some("{\"last_seq\":9}"));
    assert_eq!(store.events("p").await.unwrap(), ["e3"]);
    let mut whole = waiting("p", "me");
    whole.state = Some("{\"pc\":3}".into());
    whole.events = Vec::new();
    assert_eq!(store.checkpoint(&whole).await.unwrap(), Saved::Saved);
    let a = store.load("p").await.unwrap().unwrap();
    assert_eq!((a.state.as_str(), a.progress), ("{\"pc\":3}", None));
    // Fenced like any checkpoint.
    light.owner = "other".into();
    assert_eq!(store.checkpoint(&light).await.unwrap(), Saved::Lost);
    assert_eq!(store.load("p").await.unwrap().unwrap().progress, None);
}

/// Leases: another process cannot take a held run nor write to it, until
/// the lease runs out or its holder is known to be gone; then the first
/// holder is fenced off.
async fn leases_fence_writers(store: &dyn Store) {
    let other = Lease {
        owner: "other".into(),
        until_ms: 9_000,
    };
    assert_eq!(
        store.claim("c", &other, 500, None).await.unwrap(),
        Claimed::Held(Lease {
            owner: "me".into(),
            until_ms: 1_000
        })
    );
    let theirs = waiting("c", "other");
    assert_eq!(store.checkpoint(&theirs).await.unwrap(), Saved::Lost);
    assert_eq!(
        store.claim("c", &other, 2_000, None).await.unwrap(),
        Claimed::Taken
    );
    assert_eq!(store.checkpoint(&theirs).await.unwrap(), Saved::Saved);
    assert_eq!(
        store.checkpoint(&waiting("c", "me")).await.unwrap(),
        Saved::Lost,
        "fenced"
    );
    let mine = Lease {
        owner: "me".into(),
        until_ms: 9_500,
    };
    assert!(!store.renew("c", &mine).await.unwrap(), "not mine now");
    assert_eq!(
        store.claim("c", &mine, 2_100, Some("other")).await.unwrap(),
        Claimed::Taken,
        "its holder is gone"
    );
    assert!(!store.renew("c", &other).await.unwrap(), "no longer theirs");
    assert!(store.renew("c", &mine).await.unwrap());
    assert_eq!(
        store.claim("nobody", &mine, 0, None).await.unwrap(),
        Claimed::Unavailable
    );
}

/// A checkpoint that starts a wait as a row may let go of the run in the
/// same write: saved as released, no lease left, and another worker takes
/// the run at once; alone or among others, and never past the fence.
async fn a_wait_lets_go_of_its_run(store: &dyn Store) {
    for id in ["w1", "w2", "w3", "w4"] {
        store.create(&run(id)).await.unwrap();
    }
    let leaving = |id: &str, owner: &str| Checkpoint {
        release: true,
        ..waiting(id, owner)
    };
    let (w1, w2, w3) = (
        leaving("w1", "me"),
        waiting("w2", "me"),
        leaving("w3", "other"),
    );
    let answers: Vec<Saved> = store
        .checkpoint_many(&[&w1, &w2, &w3])
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(answers, [Saved::Released, Saved::Saved, Saved::Lost]);
    assert_eq!(
        store.checkpoint(&leaving("w4", "me")).await.unwrap(),
        Saved::Released
    );
    for (id, held) in [("w1", false), ("w2", true), ("w3", true), ("w4", false)] {
        let kept = store.load(id).await.unwrap().unwrap();
        assert_eq!(kept.lease.is_some(), held, "{id}");
    }
    assert_eq!(
        store.load("w1").await.unwrap().unwrap().status,
        DurableStatus::Waiting
    );
    let theirs = Lease {
        owner: "other".into(),
        until_ms: 9_000,
    };
    // Long before my lease (until 1,000) would have run out.
    assert_eq!(
        store.claim("w1", &theirs, 1, None).await.unwrap(),
        Claimed::Taken
    );
    assert!(matches!(
        store.claim("w2", &theirs, 1, None).await.unwrap(),
        Claimed::Held(_)
    ));
}

/// Cancellation, listing and counting.
async fn cancels_lists_and_counts(store: &dyn Store) {
    let waiting_runs = RunFilter {
        status: Some(DurableStatus::Waiting),
        ..RunFilter::default()
    };
    assert_eq!(store.list(&waiting_runs).await.unwrap().len(), 2);
    assert_eq!(
        store.counts().await.unwrap(),
        [("f".to_string(), DurableStatus::Waiting, 2)]
    );
    assert!(store.cancel("a", 6, "a test").await.unwrap());
    assert!(!store.cancel("a", 7, "a test").await.unwrap(), "once");
    assert!(!store.cancel("nobody", 7, "a test").await.unwrap());
    // The trace ends with one ending, after every event kept.
    let ending = |events: &[String]| -> serde_json::Value {
        serde_json::from_str(events.last().unwrap()).unwrap()
    };
    let events = store.events("a").await.unwrap();
    assert_eq!(events[..2], ["e1", "e2"]);
    let last = ending(&events);
    assert_eq!(
        (
            &last["event"],
            &last["status"],
            &last["reason"],
            &last["seq"]
        ),
        (
            &json!("flow_finished"),
            &json!("canceled"),
            &json!("canceled by a test"),
            &json!(3)
        ),
        "{last}"
    );
    // A canceled run is not written over: its writer is told to stop, and
    // one that no longer holds it adds nothing.
    assert_eq!(
        store.checkpoint(&waiting("a", "me")).await.unwrap(),
        Saved::Canceled
    );
    assert_eq!(store.events("a").await.unwrap(), events);
    // Canceled while its holder ran it: what the holder did since its last
    // checkpoint goes in before the ending.
    store.create(&run("d")).await.unwrap();
    assert!(store.cancel("d", 8, "a test").await.unwrap());
    let late = Checkpoint {
        events: vec![(1, "d1".into()), (2, "d2".into())],
        ..waiting("d", "me")
    };
    assert_eq!(store.checkpoint(&late).await.unwrap(), Saved::Canceled);
    let events = store.events("d").await.unwrap();
    assert_eq!(events[..2], ["d1", "d2"]);
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(ending(&events)["seq"], 3);
    assert_eq!(ending(&events)["event"], "flow_finished");
    assert!(!store.cancel("d", 9, "a test").await.unwrap());
    assert_eq!(
        store.load("a").await.unwrap().unwrap().status,
        DurableStatus::Canceled
    );
    let unfinished = RunFilter {
        unfinished: true,
        ..RunFilter::default()
    };
    let ids =
        |runs: Vec<handoff::store::StoredRun>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ids(store.list(&unfinished).await.unwrap()), ["c"]);
    assert_eq!(
        ids(store.list(&RunFilter::default()).await.unwrap()),
        ["d", "c", "a"]
    );
    let page = RunFilter {
        limit: Some(1),
        before: Some("c".into()),
        ..RunFilter::default()
    };
    assert_eq!(ids(store.list(&page).await.unwrap()), ["a"]);
    let by_flow = RunFilter {
        flow: Some("g".into()),
        ..RunFilter::default()
    };
    assert!(store.list(&by_flow).await.unwrap().is_empty());
    // By flow, then status as the store spells it.
    assert_eq!(
        store.counts().await.unwrap(),
        [
            ("f".to_string(), DurableStatus::Canceled, 2),
            ("f".to_string(), DurableStatus::Waiting, 1),
        ]
    );
    store.ping().await.unwrap();
}

/// The whole contract, in order, on an empty store.
async fn contract(store: &dyn Store) {
    creates_once_per_key(store).await;
    checkpoints_and_timers(store).await;
    leases_fence_writers(store).await;
    cancels_lists_and_counts(store).await;
    progress_between_items(store).await;
    marks_exported_spans(store).await;
    finds_runs_by_id_and_inputs(store).await;
    commits_many_in_one(store).await;
    keeps_each_versions_text(store).await;
    a_wait_lets_go_of_its_run(store).await;
}

/// Runs name their flow's version, whose text is stored once: each run,
/// read back alone or in a list, has its own version's text, whether it
/// came alone or with others, of one version or of several.
async fn keeps_each_versions_text(store: &dyn Store) {
    let of = |id: &str, source: &str| NewRun {
        flow: "versions".into(),
        flow_source: source.into(),
        flow_hash: flow_hash(source),
        ..run(id)
    };
    let (a, b) = ("flow: versions\nsteps: [a]", "flow: versions\nsteps: [b]");
    assert_eq!(store.create(&of("ver-1", a)).await.unwrap(), Created::New);
    let many = [of("ver-2", b), of("ver-3", a), of("ver-4", b)];
    assert_eq!(
        store.create_many(&many).await.unwrap(),
        vec![Created::New; 3]
    );
    let want = [("ver-1", a), ("ver-2", b), ("ver-3", a), ("ver-4", b)];
    for (id, source) in want {
        let stored = store.load(id).await.unwrap().unwrap();
        assert_eq!(
            (stored.flow_source.as_str(), stored.flow_hash),
            (source, flow_hash(source)),
            "{id}"
        );
    }
    let listed = store
        .list(&RunFilter {
            flow: Some("versions".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut listed: Vec<(String, String)> =
        listed.into_iter().map(|r| (r.id, r.flow_source)).collect();
    listed.sort();
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(i, s)| (i.to_string(), s.to_string()))
        .collect();
    assert_eq!(listed, want);
}

/// Checkpoints of several runs in one transaction (group commit) answer as
/// each would have alone, in order: the fence and a cancel still hold for
/// each, and a refused one's events are not written with the others'. (On
/// Postgres they are one statement, whatever their number; on SQLite, a
/// transaction of a few.)
async fn commits_many_in_one(store: &dyn Store) {
    for id in ["g1", "g2", "g3", "g4"] {
        store.create(&run(id)).await.unwrap();
    }
    assert!(store.cancel("g3", 9, "a test").await.unwrap());
    let canceled_before = store.events("g3").await.unwrap();
    let mut mine = waiting("g1", "me");
    mine.events = vec![(1, "g1-a".into()), (2, "g1-b".into())];
    let theirs = Checkpoint {
        events: vec![(1, "g2-x".into())],
        ..waiting("g2", "someone else")
    };
    let late = Checkpoint {
        events: vec![(1, "g3-late".into())],
        ..waiting("g3", "me")
    };
    let last = Checkpoint {
        status: DurableStatus::Succeeded,
        outcome: Some("{}".into()),
        events: (1..=60).map(|seq| (seq, format!("g4-{seq}"))).collect(),
        ..waiting("g4", "me")
    };
    let answers = store
        .checkpoint_many(&[&mine, &theirs, &late, &last])
        .await
        .unwrap();
    let answers: Vec<Saved> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        answers,
        [Saved::Saved, Saved::Lost, Saved::Canceled, Saved::Saved]
    );
    assert_eq!(store.events("g1").await.unwrap(), ["g1-a", "g1-b"]);
    assert!(store.events("g2").await.unwrap().is_empty(), "fenced off");
    // What the holder did before it heard of the cancel goes in before the ending.
    let g3 = store.events("g3").await.unwrap();
    assert_eq!(g3.len(), canceled_before.len() + 1);
    assert_eq!(g3[0], "g3-late");
    assert_eq!(store.events("g4").await.unwrap().len(), 60);
    let g1 = store.load("g1").await.unwrap().unwrap();
    assert_eq!(
        (g1.status, g1.wake_at_ms),
        (DurableStatus::Waiting, Some(100))
    );
    let g4 = store.load("g4").await.unwrap().unwrap();
    assert_eq!(g4.status, DurableStatus::Succeeded);
    // More than one statement holds, on both sides: 120 runs created in one
    // call, then checkpointed in one, each with its own state and events.
    let many: Vec<NewRun> = (0..120).map(|i| run(&format!("gm{i:03}"))).collect();
    assert!(
        store
            .create_many(&many)
            .await
            .unwrap()
            .iter()
            .all(|c| *c == Created::New)
    );
    let points: Vec<Checkpoint> = (0..120)
        .map(|i| Checkpoint {
            state: Some(format!("{{\"pc\":{i}}}")),
            wake_at_ms: Some(1000 + i),
            events: vec![(1, format!("gm{i}"))],
            ..waiting(&format!("gm{i:03}"), "me")
        })
        .collect();
    let refs: Vec<&Checkpoint> = points.iter().collect();
    let answers = store.checkpoint_many(&refs).await.unwrap();
    assert!(answers.iter().all(|a| a == &Ok(Saved::Saved)));
    for i in [0, 49, 50, 119] {
        let id = format!("gm{i:03}");
        let kept = store.load(&id).await.unwrap().unwrap();
        assert_eq!(
            (kept.state, kept.wake_at_ms),
            (format!("{{\"pc\":{i}}}"), Some(1000 + i))
        );
        assert_eq!(store.events(&id).await.unwrap(), [format!("gm{i}")]);
    }
    // The same batch again changes nothing: a checkpoint is safe to write twice.
    let again = store.checkpoint_many(&[&mine, &last]).await.unwrap();
    assert!(again.iter().all(|a| a == &Ok(Saved::Saved)));
    assert_eq!(store.events("g1").await.unwrap(), ["g1-a", "g1-b"]);
    assert_eq!(store.events("g4").await.unwrap().len(), 60);
    // In one batch, runs that keep their status and wake time (which SQLite
    // writes without naming them) and runs that change either: each row
    // says what its own checkpoint said, and its events follow its first.
    let next: Vec<Checkpoint> = (0..120)
        .map(|i| Checkpoint {
            status: if i % 3 == 0 {
                DurableStatus::Running
            } else {
                DurableStatus::Waiting
            },
            state: Some(format!("{{\"pc\":{}}}", i + 1000)),
            wake_at_ms: Some(if i % 2 == 0 { 1000 + i } else { 5000 + i }),
            steps_taken: 4,
            events: vec![(2, format!("gm{i}-next"))],
            ..waiting(&format!("gm{i:03}"), "me")
        })
        .collect();
    let refs: Vec<&Checkpoint> = next.iter().collect();
    let answers = store.checkpoint_many(&refs).await.unwrap();
    assert!(answers.iter().all(|a| a == &Ok(Saved::Saved)));
    for (i, point) in next.iter().enumerate() {
        let kept = store.load(&point.run_id).await.unwrap().unwrap();
        assert_eq!(
            (kept.status, kept.wake_at_ms, kept.steps_taken, &kept.state),
            (
                point.status,
                point.wake_at_ms,
                4,
                point.state.as_ref().unwrap()
            ),
            "run {i}"
        );
        assert_eq!(
            store.events(&point.run_id).await.unwrap(),
            [format!("gm{i}"), format!("gm{i}-next")]
        );
    }
    // Found by status as they now are: the indexes over status and wake
    // time were kept up to date by the rows that changed them.
    let waiting_now = store
        .list(&RunFilter {
            status: Some(DurableStatus::Waiting),
            ..Default::default()
        })
        .await
        .unwrap()
        .iter()
        .filter(|r| r.id.starts_with("gm"))
        .count();
    assert_eq!(waiting_now, (0..120).filter(|i| i % 3 != 0).count());
}

/// A search finds runs by text their id or inputs hold, in any case, and
/// takes `%`, `_` and `\\` literally.
async fn finds_runs_by_id_and_inputs(store: &dyn Store) {
    let made = [
        ("s-1", r#"{"instance_id":"7C1E-4b52"}"#),
        ("s-2", r#"{"instance_id":"9f00_x%"}"#),
        ("s-3", r#"{"note":"a\\b"}"#),
    ];
    for (id, inputs) in made {
        let mut r = run(id);
        r.inputs = inputs.into();
        store.create(&r).await.unwrap();
    }
    let find = |text: &str| RunFilter {
        search: Some(text.into()),
        ..RunFilter::default()
    };
    let ids = |runs: Vec<handoff::store::StoredRun>| -> Vec<String> {
        let mut ids: Vec<String> = runs.into_iter().map(|r| r.id).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(store.list(&find("7c1e")).await.unwrap()), ["s-1"]);
    assert_eq!(ids(store.list(&find("s-2")).await.unwrap()), ["s-2"]);
    assert_eq!(ids(store.list(&find("_x%")).await.unwrap()), ["s-2"]);
    assert!(
        store
            .list(&find("%"))
            .await
            .unwrap()
            .iter()
            .all(|r| r.id == "s-2")
    );
    assert!(
        store
            .list(&find("0_"))
            .await
            .unwrap()
            .iter()
            .all(|r| r.id == "s-2")
    );
    assert_eq!(ids(store.list(&find("a\\\\b")).await.unwrap()), ["s-3"]);
    assert!(
        store
            .list(&find("nothing-like-it"))
            .await
            .unwrap()
            .is_empty()
    );
    // Blank: no filter.
    assert!(store.list(&find("  ")).await.unwrap().len() >= 3);
}

/// How far a run's spans were exported: a mark that only moves forward,
/// several runs' in one call, and a run not stored is no error.
async fn marks_exported_spans(store: &dyn Store) {
    assert_eq!(store.load("p").await.unwrap().unwrap().exported_seq, 0);
    let marks = [("p".to_string(), 7), ("missing".to_string(), 3)];
    store.mark_exported(&marks).await.unwrap();
    assert_eq!(store.load("p").await.unwrap().unwrap().exported_seq, 7);
    store.mark_exported(&[("p".to_string(), 5)]).await.unwrap();
    assert_eq!(
        store.load("p").await.unwrap().unwrap().exported_seq,
        7,
        "never back"
    );
    store.mark_exported(&[("p".to_string(), 9)]).await.unwrap();
    assert_eq!(store.load("p").await.unwrap().unwrap().exported_seq, 9);
}

#[test]
fn sqlite_keeps_the_contract() {
    let dir = crate::common::scratch("store-contract");
    let path = dir.join("handoff.db");
    rt().block_on(async {
        let store = SqliteStore::open(&path).await.unwrap();
        contract(&store).await;
        assert!(store.changes().is_none(), "only this process writes");
        drop(store);
        // Opening again keeps everything, and migrates nothing twice.
        let again = SqliteStore::open(&path).await.unwrap();
        assert_eq!(again.list(&RunFilter::default()).await.unwrap().len(), 139);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[cfg_attr(
    handoff_no_postgres,
    ignore = "needs Postgres: apt-get install postgresql (or name a cluster with HANDOFF_TEST_PG_URL and HANDOFF_TEST_PG_DIR)"
)]
fn postgres_keeps_the_contract() {
    let (_turn, url) = crate::common::pg::database("contract");
    rt().block_on(async {
        let store = PgStore::open(&url, 4).await.unwrap();
        contract(&store).await;
        assert!(store.changes().is_some(), "the workers tell each other");
        // Another worker opening it migrates nothing twice, and sees the runs.
        let again = PgStore::open(&url, 2).await.unwrap();
        assert_eq!(again.list(&RunFilter::default()).await.unwrap().len(), 139);
    });
}

/// A file an earlier handoff wrote counted its schema in `handoff_schema`:
/// the migrator takes it over without running those versions again, and
/// the runs in it stay readable.
#[test]
fn sqlite_takes_over_a_file_an_earlier_handoff_wrote() {
    let dir = crate::common::scratch("store-earlier");
    let path = dir.join("handoff.db");
    rt().block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("CREATE TABLE handoff_schema (version INTEGER NOT NULL)")
            .execute(&mut conn)
            .await
            .unwrap();
        // The first three versions, as that handoff ran them.
        for (version, file) in [
            (1, "0001_runs.sql"),
            (2, "0002_leases.sql"),
            (3, "0003_idempotency.sql"),
        ] {
            let sql = std::fs::read_to_string(format!("migrations/sqlite/{file}")).unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .unwrap();
            sqlx::query("INSERT INTO handoff_schema (version) VALUES ($1)")
                .bind(version)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        sqlx::raw_sql(
            "INSERT INTO runs (id, flow, flow_path, flow_source, flow_hash, inputs, status, state, created_ms, updated_ms)
             VALUES ('old', 'f', 'f.yaml', 'flow: f', 'h', '{}', 'waiting', '{}', 1, 1);
             INSERT INTO events (run_id, seq, event) VALUES ('old', 1, 'o1'), ('old', 2, 'o2');",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        let store = SqliteStore::open(&path).await.unwrap();
        let old = store.load("old").await.unwrap().unwrap();
        assert_eq!(old.status, DurableStatus::Waiting);
        // Version 10 ran: the run's flow text moved to its version's row.
        assert_eq!(old.flow_source, "flow: f");
        // Version 11 ran: an event a row became a row of one line, which
        // reads back as before, and a checkpoint's rows go on after it.
        assert_eq!(store.events("old").await.unwrap(), ["o1", "o2"]);
        assert_eq!(
            store.events_after("old", 1).await.unwrap(),
            [(2, "o2".to_string())]
        );
        let lease = Lease {
            owner: "me".into(),
            until_ms: i64::MAX,
        };
        assert_eq!(
            store.claim("old", &lease, 2, None).await.unwrap(),
            Claimed::Taken
        );
        let point = Checkpoint {
            events: vec![(3, "o3".into()), (4, "o4".into())],
            ..waiting("old", "me")
        };
        assert_eq!(store.checkpoint(&point).await.unwrap(), Saved::Saved);
        assert_eq!(
            store.events_after("old", 1).await.unwrap(),
            [(2, "o2".into()), (3, "o3".into()), (4, "o4".to_string())]
        );
        // Version 4 ran: keys keep their inputs' fingerprint.
        assert_eq!(store.create(&keyed("new", "k", "in-1")).await.unwrap(), Created::New);
        assert_eq!(
            store.create(&keyed("newer", "k", "in-2")).await.unwrap(),
            Created::Conflict("new".into())
        );
        drop(store);
        // It keeps the page size it was made with (SQLite cannot change it
        // in WAL mode); only a new store gets larger pages.
        assert_eq!(page_size(&path).await, 4096);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The page size of the SQLite file at `path`, read by a connection of its own.
async fn page_size(path: &std::path::Path) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    size
}

/// A new store is made with 16 KiB pages: a checkpoint writes fewer of them
/// to the log than at SQLite's 4 KiB (docs/performance.md).
#[test]
fn a_new_sqlite_store_has_16_kib_pages() {
    let dir = crate::common::scratch("store-pages");
    let path = dir.join("handoff.db");
    rt().block_on(async {
        let store = SqliteStore::open(&path).await.unwrap();
        assert_eq!(store.create(&run("r")).await.unwrap(), Created::New);
        drop(store);
        assert_eq!(page_size(&path).await, 16 * 1024);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A file a newer handoff migrated further is refused, not written to.
#[test]
fn sqlite_refuses_a_file_a_newer_handoff_wrote() {
    let dir = crate::common::scratch("store-newer");
    let path = dir.join("handoff.db");
    rt().block_on(async {
        drop(SqliteStore::open(&path).await.unwrap());
        use sqlx::Connection;
        let url = format!("sqlite://{}", path.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (99, 'from the future', TRUE, X'00', 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        let refused = SqliteStore::open(&path).await.err().expect("refused");
        assert!(
            refused.0.contains("written by a newer handoff"),
            "{}",
            refused.0
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A bulk start's runs go in one transaction: a key given before (or twice
/// in the list) names its run; a key with other inputs keeps nothing.
async fn creates_many_in_one_transaction(store: &dyn Store) {
    let first = store
        .create_many(&[
            run("m1"),
            keyed("m2", "bulk-1", "in-1"),
            keyed("m3", "bulk-1", "in-1"),
        ])
        .await
        .unwrap();
    assert_eq!(
        first,
        [Created::New, Created::New, Created::Existing("m2".into())]
    );
    assert!(
        store.load("m3").await.unwrap().is_none(),
        "the repeat made no row"
    );
    // One conflict among new runs: none of them is kept.
    let again = store
        .create_many(&[run("m4"), keyed("m5", "bulk-1", "in-2"), run("m6")])
        .await
        .unwrap();
    assert_eq!(again[1], Created::Conflict("m2".into()));
    for id in ["m4", "m5", "m6"] {
        assert!(store.load(id).await.unwrap().is_none(), "{id} was kept");
    }
    let all = store.list(&RunFilter::default()).await.unwrap();
    assert_eq!(all.len(), 2);
    // More keys than one statement looks up, ten of them kept before: those
    // name their runs, the rest are made.
    let named = |prefix: &str| -> Vec<NewRun> {
        (0..450)
            .map(|i| keyed(&format!("{prefix}{i}"), &format!("big-{i}"), "in-1"))
            .collect()
    };
    store.create_many(&named("b")[..10]).await.unwrap();
    let made = store.create_many(&named("c")).await.unwrap();
    for (i, created) in made.iter().enumerate() {
        let expected = if i < 10 {
            Created::Existing(format!("b{i}"))
        } else {
            Created::New
        };
        assert_eq!(*created, expected, "row {i}");
    }
    assert!(store.load("c0").await.unwrap().is_none());
    assert!(store.load("c449").await.unwrap().is_some());
}

/// The scheduler looks for due runs every second. With none due it takes
/// no write lock: a writer holding SQLite's (a batch of checkpoints) does
/// not hold it up, and it does not hold the writer up. With one due, it
/// waits for the lock as before.
#[test]
fn sqlite_looks_for_due_runs_without_the_write_lock() {
    use sqlx::Connection;
    let dir = crate::common::scratch("store-due-unlocked");
    let path = dir.join("handoff.db");
    rt().block_on(async {
        let store = SqliteStore::open(&path).await.unwrap();
        store.create(&run("a")).await.unwrap();
        store.checkpoint(&waiting("a", "me")).await.unwrap();
        let lease = Lease {
            owner: "me".into(),
            until_ms: 10_000,
        };
        let url = format!("sqlite://{}", path.display());
        let mut writer = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut writer)
            .await
            .unwrap();
        // `a` wakes at 100: at 99 nothing is due, and the answer comes
        // while the other connection holds the lock (before, the poll
        // waited for it, and failed as "locked" after five seconds).
        assert!(store.take_due(99, &lease, 10).await.unwrap().is_empty());
        sqlx::query("COMMIT").execute(&mut writer).await.unwrap();
        let taken = store.take_due(100, &lease, 10).await.unwrap();
        assert_eq!(taken.len(), 1);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sqlite_creates_many_in_one_transaction() {
    let dir = crate::common::scratch("store-bulk");
    rt().block_on(async {
        let store = SqliteStore::open(&dir.join("handoff.db")).await.unwrap();
        creates_many_in_one_transaction(&store).await;
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[cfg_attr(
    handoff_no_postgres,
    ignore = "needs Postgres: apt-get install postgresql (or name a cluster with HANDOFF_TEST_PG_URL and HANDOFF_TEST_PG_DIR)"
)]
fn postgres_creates_many_in_one_transaction() {
    let (_turn, url) = crate::common::pg::database("bulk");
    rt().block_on(async {
        let store = PgStore::open(&url, 4).await.unwrap();
        creates_many_in_one_transaction(&store).await;
    });
}
