//! The contract every [`Backend`] keeps, as test functions an adapter's own test suite calls
//! with itself and a fixture on its own simulator (behind the `conformance` feature, so only
//! test builds carry it). Nothing here knows which hypervisor it talks to; a check that fails
//! panics with what it expected and what it got.

use std::time::Duration;

use async_trait::async_trait;
use labfleet_jobs::PowerAction;

use super::{
    Backend, BackendError, CreateRequest, Expect, GuestRef, Inspected, OpState, Operation,
    PowerRequest, Progress, Source,
};
use crate::{DeployMethod, Marker};

/// What only the adapter's test can arrange on its simulator.
#[async_trait]
pub trait Arrange: Send + Sync {
    /// While on, a make fails inside its operation (not at the request), e.g. a full storage.
    async fn fail_makes(&self, on: bool);
    /// While on, a make runs long enough to be cancelled (seconds, not milliseconds).
    async fn slow_makes(&self, on: bool);
}

/// Where and how the checks make their guests.
pub struct Fixture<'a> {
    /// The backend under test.
    pub backend: &'a dyn Backend,
    /// Its simulator's knobs.
    pub arrange: &'a dyn Arrange,
    /// What to copy.
    pub source: Source,
    /// How.
    pub method: DeployMethod,
    /// The node new guests go to.
    pub node: String,
    /// A full copy's storage.
    pub storage: Option<String>,
    /// Ids free for new guests: at least [`IDS_NEEDED`], one per check.
    pub free_ids: Vec<String>,
    /// How long one operation may take.
    pub budget: Duration,
}

/// How many free ids [`run_all`] uses.
pub const IDS_NEEDED: usize = 7;

/// Runs every check, each on its own id.
pub async fn run_all(f: &Fixture<'_>) {
    assert!(
        f.free_ids.len() >= IDS_NEEDED,
        "the fixture needs {IDS_NEEDED} free ids"
    );
    let id = |i: usize| f.free_ids[i].as_str();
    a_made_guest_is_ours_and_only_ours(f, id(0)).await;
    a_make_on_a_taken_id_is_already_exists(f, id(1)).await;
    the_same_power_request_twice_is_already_in_state(f, id(2)).await;
    destroying_a_missing_guest_is_not_found(f, id(3)).await;
    a_failed_operation_carries_the_hypervisors_message(f, id(4)).await;
    cancel_stops_a_running_make(f, id(5)).await;
    the_fleet_read_sees_what_was_made(f, id(6)).await;
}

fn marker(id: &str) -> Marker {
    let n = id.bytes().fold(0_i64, |h, b| h * 31 + i64::from(b)) % 1_000_000;
    Marker {
        class_id: 424_242,
        class_vm_id: n + 1,
    }
}

fn request(f: &Fixture<'_>, id: &str) -> CreateRequest {
    CreateRequest {
        source: f.source.clone(),
        method: f.method,
        target: GuestRef {
            node: f.node.clone(),
            id: id.to_string(),
        },
        storage: f.storage.clone(),
        name: format!("conformance-{}", id.replace(['/', '_'], "-")),
        notes: Some("made by the backend conformance suite".into()),
        marker: marker(id),
        customization: None,
    }
}

/// Waits until the operation ends, within the fixture's budget.
async fn settle(f: &Fixture<'_>, op: &Operation) -> OpState {
    let deadline = tokio::time::Instant::now() + f.budget;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match f.backend.wait(op, left, Progress::Skip).await {
            Ok(OpState::Running { .. }) if left.is_zero() => {
                panic!("operation {op} still runs after {:?}", f.budget)
            }
            Ok(OpState::Running { .. }) => {}
            Ok(state) => return state,
            Err(e) => panic!("cannot wait for operation {op}: {e:?}"),
        }
    }
}

async fn expect_done(f: &Fixture<'_>, op: Result<Operation, BackendError>, what: &str) {
    let op = op.unwrap_or_else(|e| panic!("{what}: the request failed: {e:?}"));
    let state = settle(f, &op).await;
    assert_eq!(
        state,
        OpState::Done,
        "{what}: the operation did not succeed"
    );
}

/// Makes a guest and waits for it.
async fn make(f: &Fixture<'_>, id: &str) -> GuestRef {
    let req = request(f, id);
    expect_done(f, f.backend.create(&req).await, "create").await;
    req.target
}

/// Removes a guest the checks made (stopping it first).
async fn remove(f: &Fixture<'_>, guest: &GuestRef) {
    let stop = PowerRequest {
        action: PowerAction::Stop,
        timeout: None,
    };
    match f.backend.power(guest, stop).await {
        Ok(op) => assert_eq!(settle(f, &op).await, OpState::Done, "stop before destroy"),
        Err(BackendError::AlreadyInState(_)) => {}
        Err(e) => panic!("stop before destroy: {e:?}"),
    }
    expect_done(f, f.backend.destroy(guest).await, "destroy").await;
    assert_eq!(
        f.backend
            .inspect(&guest.id, Expect::AnyOfOurs)
            .await
            .expect("inspect after destroy"),
        Inspected::Absent,
        "a destroyed guest is absent"
    );
}

/// Create, then inspect: ours with the marker written; another VM's marker sees it as foreign.
pub async fn a_made_guest_is_ours_and_only_ours(f: &Fixture<'_>, id: &str) {
    let guest = make(f, id).await;
    let mine = marker(id);
    match f.backend.inspect(id, Expect::Vm(mine.class_vm_id)).await {
        Ok(Inspected::Ours {
            guest: found,
            marker,
            in_progress,
            ..
        }) => {
            assert_eq!(marker, mine, "the marker read back is the one written");
            assert_eq!(found, guest, "inspect says where it is");
            assert!(!in_progress, "a finished make is not in progress");
        }
        other => panic!("inspect of a guest just made: expected Ours, got {other:?}"),
    }
    match f
        .backend
        .inspect(id, Expect::Vm(mine.class_vm_id + 1))
        .await
    {
        Ok(Inspected::Foreign { .. }) => {}
        other => panic!("inspect with another VM's marker: expected Foreign, got {other:?}"),
    }
    assert!(
        matches!(
            f.backend.inspect(id, Expect::AnyOfOurs).await,
            Ok(Inspected::Ours { .. })
        ),
        "any of ours finds it"
    );
    remove(f, &guest).await;
}

/// A second create on the same id is `AlreadyExists`, from the request or its operation.
pub async fn a_make_on_a_taken_id_is_already_exists(f: &Fixture<'_>, id: &str) {
    let guest = make(f, id).await;
    match f.backend.create(&request(f, id)).await {
        Err(BackendError::AlreadyExists(m)) => assert!(!m.is_empty()),
        Ok(op) => match settle(f, &op).await {
            OpState::Failed(BackendError::AlreadyExists(m)) => assert!(!m.is_empty()),
            other => panic!("a make on a taken id: expected AlreadyExists, got {other:?}"),
        },
        Err(e) => panic!("a make on a taken id: expected AlreadyExists, got {e:?}"),
    }
    remove(f, &guest).await;
}

/// Start twice, stop twice, shut down a stopped guest: each repeat is `AlreadyInState`.
pub async fn the_same_power_request_twice_is_already_in_state(f: &Fixture<'_>, id: &str) {
    let guest = make(f, id).await;
    let req = |action| PowerRequest {
        action,
        timeout: Some(Duration::from_secs(5)),
    };
    for (action, repeats) in [
        (PowerAction::Start, &[PowerAction::Start][..]),
        (
            PowerAction::Stop,
            &[PowerAction::Stop, PowerAction::Shutdown][..],
        ),
    ] {
        expect_done(
            f,
            f.backend.power(&guest, req(action)).await,
            &format!("{action:?}"),
        )
        .await;
        for again in repeats {
            match f.backend.power(&guest, req(*again)).await {
                Err(BackendError::AlreadyInState(m)) => assert!(!m.is_empty()),
                other => {
                    panic!("{again:?} after {action:?}: expected AlreadyInState, got {other:?}")
                }
            }
        }
    }
    remove(f, &guest).await;
}

/// Destroying an id where nothing is: `NotFound`, from the request or its operation.
pub async fn destroying_a_missing_guest_is_not_found(f: &Fixture<'_>, id: &str) {
    let missing = GuestRef {
        node: f.node.clone(),
        id: id.to_string(),
    };
    match f.backend.destroy(&missing).await {
        Err(BackendError::NotFound(m)) => assert!(!m.is_empty()),
        Ok(op) => match settle(f, &op).await {
            OpState::Failed(BackendError::NotFound(m)) => assert!(!m.is_empty()),
            other => panic!("destroy of a missing guest: expected NotFound, got {other:?}"),
        },
        Err(e) => panic!("destroy of a missing guest: expected NotFound, got {e:?}"),
    }
}

/// A make that fails inside its operation ends `Failed` with the hypervisor's reason, and
/// leaves no guest behind.
pub async fn a_failed_operation_carries_the_hypervisors_message(f: &Fixture<'_>, id: &str) {
    f.arrange.fail_makes(true).await;
    let created = f.backend.create(&request(f, id)).await;
    let state = match &created {
        Ok(op) => Some(settle(f, op).await),
        Err(_) => None,
    };
    f.arrange.fail_makes(false).await;
    let op = created.unwrap_or_else(|e| {
        panic!("the arranged failure must happen inside the operation, not at the request: {e:?}")
    });
    match state {
        Some(OpState::Failed(e)) => {
            assert!(!e.message().trim().is_empty(), "the failure says why");
            assert!(
                e.message().len() > 10,
                "the hypervisor's own message is kept: {e:?}"
            );
        }
        other => panic!("operation {op} under an arranged failure: expected Failed, got {other:?}"),
    }
    assert_eq!(
        f.backend
            .inspect(id, Expect::AnyOfOurs)
            .await
            .expect("inspect after a failed make"),
        Inspected::Absent,
        "a failed make leaves no guest"
    );
}

/// Cancel of a running make: it ends (failed, or done if it won the race) and a failed one
/// leaves no guest.
pub async fn cancel_stops_a_running_make(f: &Fixture<'_>, id: &str) {
    f.arrange.slow_makes(true).await;
    let op = f
        .backend
        .create(&request(f, id))
        .await
        .unwrap_or_else(|e| panic!("a slow make: the request failed: {e:?}"));
    let running = f.backend.wait(&op, Duration::ZERO, Progress::Skip).await;
    assert!(
        matches!(running, Ok(OpState::Running { .. })),
        "a slow make still runs right after its request: {running:?}"
    );
    f.backend.cancel(&op).await.expect("cancel");
    let ended = settle(f, &op).await;
    f.arrange.slow_makes(false).await;
    match ended {
        OpState::Failed(_) => assert_eq!(
            f.backend
                .inspect(id, Expect::AnyOfOurs)
                .await
                .expect("inspect after a cancelled make"),
            Inspected::Absent,
            "a cancelled make leaves no guest"
        ),
        OpState::Done => remove(f, &request(f, id).target).await,
        OpState::Running { .. } => unreachable!("settle returns an ended state"),
    }
}

/// The fleet read lists the made guest on its node, and sees it run once started.
pub async fn the_fleet_read_sees_what_was_made(f: &Fixture<'_>, id: &str) {
    let guest = make(f, id).await;
    let fleet = f.backend.fleet().await.expect("fleet read");
    let seen = fleet
        .guest(id)
        .unwrap_or_else(|| panic!("the fleet read does not list {id}"));
    assert_eq!(seen.guest, guest);
    assert!(seen.vm && !seen.template && !seen.running, "{seen:?}");
    assert!(
        fleet.nodes.iter().any(|n| n.name == guest.node && n.online),
        "its node is listed online"
    );
    let start = PowerRequest {
        action: PowerAction::Start,
        timeout: None,
    };
    expect_done(f, f.backend.power(&guest, start).await, "start").await;
    let fleet = f.backend.fleet().await.expect("fleet read");
    assert!(
        fleet.guest(id).is_some_and(|g| g.running),
        "the fleet read sees it run"
    );
    remove(f, &guest).await;
}
