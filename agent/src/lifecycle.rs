//! One lifecycle for the agent's services: every long-running task is spawned through
//! [`Services`], stops on one signal per [`Stage`], and shutdown stops the stages in order,
//! each within a grace period, saying which task did not stop.
//!
//! Stages stop in this order: the control plane ([`Stage::Control`]: scheduler, launcher), the
//! node's data plane followers ([`Stage::Data`]: DNS, overlay, load balancer), the local API
//! ([`Stage::Api`]), then the facts cache ([`Stage::Facts`]); gossip goes last, after every
//! reader of it. A stopping service may still publish (the scheduler withdraws its keys).
//!
//! [`settle`] is the step of every follower: wait for a change or the stop, then let a burst
//! of changes settle so it costs one step.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// When a service stops, relative to the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    Control,
    Data,
    Api,
    Facts,
}

impl Stage {
    const ALL: [Stage; 4] = [Stage::Control, Stage::Data, Stage::Api, Stage::Facts];
}

/// The signal a service's tasks watch: cancelled when their stage stops.
pub type Stopping = CancellationToken;

/// The tasks of every service, by stage.
#[derive(Debug, Default)]
pub struct Services {
    stages: HashMap<Stage, (CancellationToken, JoinSet<()>)>,
    names: HashMap<Id, String>,
}

impl Services {
    /// The stop signal of `stage`, for tasks that a service spawns itself.
    pub fn stopping(&mut self, stage: Stage) -> Stopping {
        self.stages.entry(stage).or_default().0.clone()
    }

    /// Runs `task` until it returns; it must return soon after [`Services::stopping`] of its
    /// stage is cancelled.
    pub fn spawn(
        &mut self,
        stage: Stage,
        name: impl Into<String>,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        let (_, set) = self.stages.entry(stage).or_default();
        let handle = set.spawn(task);
        self.names.insert(handle.id(), name.into());
    }

    /// Stops the stages in order, waiting up to `grace` for each; a task still running then is
    /// aborted. Returns the names of the tasks that ended another way than by returning: not
    /// stopped within the grace period, or panicked.
    pub async fn shutdown(mut self, grace: Duration) -> Vec<String> {
        let mut failed = Vec::new();
        for stage in Stage::ALL {
            let Some((stop, mut set)) = self.stages.remove(&stage) else {
                continue;
            };
            stop.cancel();
            let deadline = tokio::time::Instant::now() + grace;
            loop {
                match tokio::time::timeout_at(deadline, set.join_next_with_id()).await {
                    Ok(None) => break,
                    Ok(Some(Ok((id, ())))) => {
                        debug!(task = %self.name(id), ?stage, "stopped");
                    }
                    Ok(Some(Err(e))) => {
                        let name = self.name(e.id());
                        warn!(task = %name, error = %e, "a service task failed");
                        failed.push(name);
                    }
                    Err(_) => {
                        // What is still in the set did not stop in time.
                        let mut late = Vec::new();
                        set.abort_all();
                        while let Some(ended) = set.join_next_with_id().await {
                            let id = match ended {
                                Ok((id, ())) => id,
                                Err(e) => e.id(),
                            };
                            late.push(self.name(id));
                        }
                        warn!(tasks = ?late, ?stage, grace = ?grace,
                              "service tasks did not stop within the grace period; aborted");
                        failed.extend(late);
                        break;
                    }
                }
            }
        }
        failed
    }

    fn name(&self, id: Id) -> String {
        self.names
            .get(&id)
            .cloned()
            .unwrap_or_else(|| format!("task {id}"))
    }
}

/// Waits until `changed` resolves (`false`: its source is gone) or `stop` is cancelled, then
/// `debounce`. Returns whether the follower should take another step.
pub async fn settle(
    stop: &Stopping,
    changed: impl Future<Output = bool>,
    debounce: Duration,
) -> bool {
    let go_on = tokio::select! {
        go_on = changed => go_on,
        () = stop.cancelled() => false,
    };
    if !go_on {
        return false;
    }
    tokio::select! {
        () = tokio::time::sleep(debounce) => true,
        () = stop.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[tokio::test]
    async fn stages_stop_in_order_and_a_stuck_task_is_named() {
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut services = Services::default();
        for (stage, name) in [
            (Stage::Facts, "facts"),
            (Stage::Api, "api"),
            (Stage::Control, "scheduler"),
            (Stage::Data, "dns"),
        ] {
            let stop = services.stopping(stage);
            let order = order.clone();
            services.spawn(stage, name, async move {
                stop.cancelled().await;
                order.lock().unwrap().push(name);
            });
        }
        services.spawn(Stage::Data, "stuck", std::future::pending());
        let failed = services.shutdown(Duration::from_millis(200)).await;
        assert_eq!(failed, ["stuck"]);
        assert_eq!(*order.lock().unwrap(), ["scheduler", "dns", "api", "facts"]);
    }

    #[tokio::test]
    async fn settle_steps_on_a_change_and_ends_on_the_stop() {
        let stop = Stopping::new();
        assert!(settle(&stop, async { true }, Duration::from_millis(1)).await);
        assert!(!settle(&stop, async { false }, Duration::from_millis(1)).await);
        stop.cancel();
        assert!(!settle(&stop, std::future::pending(), Duration::from_millis(1)).await);
    }
}
