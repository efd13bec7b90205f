//! The live pointer: every flip is conditional on the value it read, so of
//! concurrent flips exactly one wins and the others conflict.

use std::sync::Arc;

use wasmgate::modules::ModuleKey;
use wasmgate::routes::{
    ChangeNote, NewVersion, RouteName, RouteTable, SqliteRouteTable, TableError, live_of,
};

fn note(actor: &str) -> ChangeNote {
    ChangeNote {
        actor: actor.into(),
        action: "rollback".into(),
        reason: None,
        from_version: None,
    }
}

#[tokio::test]
async fn concurrent_flips_one_wins_the_others_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("routes.sqlite3");
    let route = RouteName::parse("/api").unwrap();
    let setup = SqliteRouteTable::open(&db).unwrap();
    let mut versions = Vec::new();
    for i in 0..9u8 {
        let key = ModuleKey::for_bytes(&[i]);
        versions.push(
            setup
                .add_version(
                    &route,
                    NewVersion {
                        module: key,
                        actor: "setup".into(),
                        metadata: serde_json::json!({}),
                        secrets: Default::default(),
                        preview_token: None,
                    },
                )
                .await
                .unwrap(),
        );
    }
    setup
        .flip(&route, None, &versions[0], note("setup"))
        .await
        .unwrap();

    // Eight writers, each with its own connection (as separate processes
    // would have), all read the same pointer, then all flip at once.
    const WRITERS: usize = 8;
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for (i, target) in versions.iter().skip(1).cloned().enumerate() {
        let db = db.clone();
        let route = route.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let table = SqliteRouteTable::open(&db).unwrap();
            let read = live_of(&table, &route).await.unwrap();
            barrier.wait().await;
            table
                .flip(&route, read.as_ref(), &target, note(&format!("writer-{i}")))
                .await
        }));
    }
    let mut wins = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(pointer) => wins.push(pointer),
            Err(TableError::Conflict { .. }) => conflicts += 1,
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(wins.len(), 1, "exactly one flip wins");
    assert_eq!(conflicts, WRITERS - 1);

    let live = live_of(&setup, &route).await.unwrap().unwrap();
    assert_eq!(live.version, wins[0].version, "the winner's value is live");
    let history = setup.history(&route).await.unwrap();
    assert_eq!(
        history.len(),
        2,
        "one change recorded for the setup, one for the winner"
    );
}

#[tokio::test]
async fn a_stale_flip_changes_nothing_and_says_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let table = SqliteRouteTable::open(dir.path().join("r.sqlite3")).unwrap();
    let route = RouteName::parse("shop.example.com/api").unwrap();
    let v = |b: &'static [u8]| NewVersion {
        module: ModuleKey::for_bytes(b),
        actor: "t".into(),
        metadata: serde_json::json!({}),
        secrets: Default::default(),
        preview_token: None,
    };
    let v1 = table.add_version(&route, v(b"1")).await.unwrap();
    let v2 = table.add_version(&route, v(b"2")).await.unwrap();
    let v3 = table.add_version(&route, v(b"3")).await.unwrap();
    assert_eq!((v1.number, v2.number, v3.number), (1, 2, 3));

    table.flip(&route, None, &v1, note("a")).await.unwrap();
    // A second "first deploy" that read no pointer conflicts.
    let err = table.flip(&route, None, &v2, note("b")).await.unwrap_err();
    assert!(matches!(err, TableError::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("nothing was changed"), "{err}");

    let read = live_of(&table, &route).await.unwrap();
    table
        .flip(&route, read.as_ref(), &v2, note("c"))
        .await
        .unwrap();
    let err = table
        .flip(&route, read.as_ref(), &v3, note("d"))
        .await
        .unwrap_err();
    assert!(matches!(err, TableError::Conflict { .. }));
    assert_eq!(
        live_of(&table, &route).await.unwrap().unwrap().version,
        Some(2)
    );
    assert_eq!(table.history(&route).await.unwrap().len(), 2);
}
