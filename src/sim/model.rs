//! The simulator's world: instances, their tasks, and what happens when a task
//! is listed or completed.
//!
//! Plain data and plain functions, with time passed in, so the rules of the
//! NWC contract (filters, the 30-day window, paging, completion) are tested
//! without a server. `routes` and `control` call it under a short lock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

/// A failure the API answers as problem+json.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: u16,
    pub title: &'static str,
    pub detail: String,
}

impl Problem {
    pub fn new(status: u16, title: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            title,
            detail: detail.into(),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(404, "Not Found", detail)
    }

    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(400, "Bad Request", detail)
    }
}

/// What a new waiting instance looks like. Every field has a default, so the
/// control endpoint and `POST …/instances` share it.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub workflow_id: String,
    pub workflow_name: String,
    pub assignees: Vec<String>,
    pub outcomes: Vec<String>,
    /// How long after the start NWC creates the task.
    pub delay: Duration,
    /// How many task lists that would match the task still miss it.
    pub after_polls: u32,
    /// Backdates the start, for the 30-day window.
    pub age: Duration,
    pub start_data: Value,
    /// Starts paused, as when an action failed and the workflow's error
    /// handling paused the instance: it needs `/resolve`.
    pub paused: bool,
}

pub const DEFAULT_ASSIGNEE: &str = "svc-worker@contoso.com";
pub const DEFAULT_WORKFLOW: &str = "Container inspection";

impl InstanceSpec {
    pub fn new(delay: Duration) -> InstanceSpec {
        InstanceSpec {
            workflow_id: String::new(),
            workflow_name: DEFAULT_WORKFLOW.to_string(),
            assignees: vec![DEFAULT_ASSIGNEE.to_string()],
            outcomes: vec!["Completed".to_string(), "Canceled".to_string()],
            delay,
            after_polls: 0,
            age: Duration::ZERO,
            start_data: json!({}),
            paused: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Instance {
    pub id: String,
    pub workflow_id: String,
    pub workflow_name: String,
    pub started: SystemTime,
    pub start_data: Value,
    /// Empty for an instance that waits on a callback instead.
    pub task_id: String,
    /// `running` (waiting on its task or callback, too), `paused` (an action
    /// failed), `completed`, `failed` or `terminated`, as NWC says them.
    pub status: &'static str,
    /// The error of the action that paused it.
    pub error: Option<String>,
    /// Set when the task is completed: the branch the instance continued down.
    pub outcome: Option<String>,
    pub finished: Option<SystemTime>,
    /// "Call a web service – Wait for callback": where it called, and what it
    /// waits for.
    pub callout: Option<Callout>,
}

/// An instance's call-out to a worker, and the callback it waits on.
#[derive(Debug, Clone)]
pub struct Callout {
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// The id in the callback URL: only the instance knows it.
    pub callback_id: String,
    pub outcomes: Vec<String>,
    /// What the worker's endpoint answered: a status, or why it could not.
    pub answers: Vec<String>,
    pub called_back: u32,
}

#[derive(Debug, Clone)]
pub struct Assignment {
    pub id: String,
    pub assignee: String,
    pub status: &'static str,
    pub outcome: Option<String>,
    pub completed_by: Option<String>,
    pub completed: Option<SystemTime>,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub instance_id: String,
    pub workflow_id: String,
    pub workflow_name: String,
    pub outcomes: Vec<String>,
    pub status: &'static str,
    /// When NWC creates it; it does not exist before.
    pub created: SystemTime,
    pub hidden_polls: u32,
    pub modified: SystemTime,
    pub completed: Option<SystemTime>,
    pub assignments: Vec<Assignment>,
    /// Successful completions: the exactly-once check reads it.
    pub completions: u32,
    /// Every completion request that reached the task, refused ones included.
    pub completion_attempts: u32,
    /// The task as JSON, kept between lists until the task changes: a page of
    /// 50 is then 50 copies, not 50 documents built afresh.
    pub cached_json: Option<Arc<str>>,
}

impl Task {
    pub fn exists(&self, now: SystemTime) -> bool {
        now >= self.created
    }
}

/// Which tasks a list asks for, parsed from its query.
#[derive(Debug, Default, Clone)]
pub struct TaskQuery {
    pub instance_id: Option<String>,
    pub workflow_name: Option<String>,
    pub assignee: Option<String>,
    pub status: Option<String>,
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
    pub skip: usize,
}

pub const STATUSES: &[&str] = &[
    "active",
    "active-escalated",
    "expired",
    "complete",
    "overridden",
    "terminated",
    "paused",
    "all",
];

impl TaskQuery {
    /// Parses the query pairs; unknown parameters are ignored, as servers do.
    pub fn parse(pairs: &[(String, String)]) -> Result<TaskQuery, Problem> {
        let mut q = TaskQuery::default();
        for (key, value) in pairs {
            match key.as_str() {
                "workflowInstanceId" => q.instance_id = Some(value.clone()),
                "workflowName" => q.workflow_name = Some(value.clone()),
                "assignee" => q.assignee = Some(value.clone()),
                "status" => {
                    let status = value.to_ascii_lowercase();
                    if !STATUSES.contains(&status.as_str()) {
                        return Err(Problem::bad_request(format!(
                            "`status` must be one of {}",
                            STATUSES.join(", ")
                        )));
                    }
                    q.status = Some(status);
                }
                "from" => q.from = Some(parse_date(key, value)?),
                "to" => q.to = Some(parse_date(key, value)?),
                "skip" => {
                    q.skip = value
                        .parse()
                        .map_err(|_| Problem::bad_request("`skip` is not a page position"))?
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// Accepts the forms clients send: `2025-02-01`, `…T00:00:00Z`,
/// `…T00:00:00.000Z`, `…T00:00:00.123456Z`.
pub fn parse_date(key: &str, value: &str) -> Result<SystemTime, Problem> {
    let text = value.trim();
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    humantime::parse_rfc3339(&full).map_err(|_| {
        Problem::bad_request(format!(
            "`{key}` must be an ISO-8601 date such as 2025-02-01 or 2025-02-01T00:00:00.000Z"
        ))
    })
}

pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn opt_timestamp(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(timestamp(t)))
}

/// A page of a task list.
pub struct Page {
    /// Each task, serialised.
    pub tasks: Vec<Arc<str>>,
    /// The position of the next page, if there is one.
    pub next_skip: Option<usize>,
}

/// Deterministic ids from a seed (splitmix64), shaped like GUIDs.
#[derive(Debug, Clone)]
pub struct Ids(u64);

impl Ids {
    pub fn new(seed: u64) -> Ids {
        Ids(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn guid(&mut self) -> String {
        let (a, b) = (self.next_u64(), self.next_u64());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }

    /// An app token: `prefix` and 32 hex digits.
    pub fn token(&mut self, prefix: &str) -> String {
        format!("{prefix}{:016x}{:016x}", self.next_u64(), self.next_u64())
    }
}

#[derive(Debug)]
pub struct World {
    pub ids: Ids,
    pub instances: Vec<Instance>,
    pub tasks: Vec<Task>,
    /// How far back a list without `from` reaches.
    pub window: Duration,
    pub page_size: usize,
    /// Positions by lower-case id: a lookup is not a scan of every task, so
    /// the simulator stays as fast with 100,000 instances as with ten.
    task_at: HashMap<String, usize>,
    instance_at: HashMap<String, usize>,
    tasks_of: HashMap<String, Vec<usize>>,
}

impl World {
    pub fn new(seed: u64, window: Duration, page_size: usize) -> World {
        World {
            ids: Ids::new(seed),
            instances: Vec::new(),
            tasks: Vec::new(),
            window,
            page_size: page_size.max(1),
            task_at: HashMap::new(),
            instance_at: HashMap::new(),
            tasks_of: HashMap::new(),
        }
    }

    fn add_task(&mut self, task: Task) {
        let at = self.tasks.len();
        self.task_at.insert(task.id.to_ascii_lowercase(), at);
        self.tasks_of
            .entry(task.instance_id.to_ascii_lowercase())
            .or_default()
            .push(at);
        self.tasks.push(task);
    }

    fn add_instance(&mut self, instance: Instance) {
        self.instance_at
            .insert(instance.id.to_ascii_lowercase(), self.instances.len());
        self.instances.push(instance);
    }

    /// Starts an instance that waits on an "Await Completion" task, which NWC
    /// creates `spec.delay` later.
    pub fn start_instance(&mut self, spec: InstanceSpec, now: SystemTime) -> (String, String) {
        let started = now.checked_sub(spec.age).unwrap_or(now);
        let id = self.ids.guid();
        let task_id = self.ids.guid();
        let workflow_id = if spec.workflow_id.is_empty() {
            self.ids.guid()
        } else {
            spec.workflow_id.clone()
        };
        let created = started + spec.delay;
        let assignments = spec
            .assignees
            .iter()
            .map(|assignee| Assignment {
                id: self.ids.guid(),
                assignee: assignee.clone(),
                status: "active",
                outcome: None,
                completed_by: None,
                completed: None,
            })
            .collect();
        self.add_task(Task {
            id: task_id.clone(),
            instance_id: id.clone(),
            workflow_id: workflow_id.clone(),
            workflow_name: spec.workflow_name.clone(),
            outcomes: spec.outcomes,
            status: "active",
            created,
            hidden_polls: spec.after_polls,
            modified: created,
            completed: None,
            assignments,
            completions: 0,
            completion_attempts: 0,
            cached_json: None,
        });
        let paused = spec.paused;
        self.add_instance(Instance {
            id: id.clone(),
            workflow_id,
            workflow_name: spec.workflow_name,
            started,
            start_data: spec.start_data,
            task_id: task_id.clone(),
            status: if paused { "paused" } else { "running" },
            error: paused.then(|| "Call a web service: the service answered 500".to_string()),
            outcome: None,
            finished: None,
            callout: None,
        });
        (id, task_id)
    }

    /// Starts an instance whose "Call a web service – Wait for callback"
    /// action calls `url`: it has no task, and waits until its callback URL
    /// is called with one of `spec.outcomes`.
    pub fn start_callout(
        &mut self,
        spec: InstanceSpec,
        url: String,
        headers: Vec<(String, String)>,
        now: SystemTime,
    ) -> (String, String) {
        let id = self.ids.guid();
        let callback_id = self.ids.guid();
        let workflow_id = if spec.workflow_id.is_empty() {
            self.ids.guid()
        } else {
            spec.workflow_id.clone()
        };
        self.add_instance(Instance {
            id: id.clone(),
            workflow_id,
            workflow_name: spec.workflow_name,
            started: now,
            start_data: spec.start_data,
            task_id: String::new(),
            status: "running",
            error: None,
            outcome: None,
            finished: None,
            callout: Some(Callout {
                url,
                headers,
                callback_id: callback_id.clone(),
                outcomes: spec.outcomes,
                answers: Vec::new(),
                called_back: 0,
            }),
        });
        (id, callback_id)
    }

    /// The callback: the instance continues down `outcome`'s branch. A second
    /// callback is a 409, as the action has already gone on.
    pub fn call_back(
        &mut self,
        instance_id: &str,
        callback_id: &str,
        outcome: &str,
        now: SystemTime,
    ) -> Result<(), Problem> {
        let instance = self.instance_mut(instance_id)?;
        let Some(callout) = instance
            .callout
            .as_mut()
            .filter(|c| c.callback_id.eq_ignore_ascii_case(callback_id))
        else {
            return Err(Problem::not_found(format!(
                "instance `{instance_id}` waits on no callback with this id"
            )));
        };
        callout.called_back += 1;
        if let Some(done) = &instance.outcome {
            return Err(Problem::new(
                409,
                "Conflict",
                format!("instance `{instance_id}` was already called back with `{done}`"),
            ));
        }
        if !callout.outcomes.iter().any(|o| o == outcome) {
            return Err(Problem::bad_request(format!(
                "`{outcome}` is not one of the action's branches: {}",
                callout.outcomes.join(", ")
            )));
        }
        instance.outcome = Some(outcome.to_string());
        instance.finished = Some(now);
        instance.status = "completed";
        Ok(())
    }

    /// `POST /workflows/v1/instances/{id}/resolve`: `1` retries the failed
    /// action (the instance runs again), `2` fails the instance.
    pub fn resolve(
        &mut self,
        id: &str,
        resolve_type: &str,
        now: SystemTime,
    ) -> Result<(), Problem> {
        let instance = self.instance_mut(id)?;
        if instance.status != "paused" {
            return Err(Problem::new(
                409,
                "Conflict",
                format!(
                    "instance `{id}` is {}, not paused: there is nothing to resolve",
                    instance.status
                ),
            ));
        }
        match resolve_type {
            "1" => {
                instance.status = "running";
                instance.error = None;
            }
            "2" => {
                instance.status = "failed";
                instance.finished = Some(now);
            }
            _ => {
                return Err(Problem::bad_request(
                    "`resolveType` is \"1\" (retry the action) or \"2\" (fail the instance)",
                ));
            }
        }
        Ok(())
    }

    /// `POST /workflows/v1/instances/{id}/terminate`: its task goes too.
    pub fn terminate(&mut self, id: &str, now: SystemTime) -> Result<(), Problem> {
        let instance = self.instance_mut(id)?;
        if instance.finished.is_some() {
            return Err(Problem::new(
                409,
                "Conflict",
                format!("instance `{id}` has already ended ({})", instance.status),
            ));
        }
        instance.status = "terminated";
        instance.finished = Some(now);
        let task_id = instance.task_id.clone();
        if let Some(&at) = self.task_at.get(&task_id.to_ascii_lowercase()) {
            let task = &mut self.tasks[at];
            task.status = "terminated";
            task.modified = now;
            task.cached_json = None;
            for a in &mut task.assignments {
                if a.status == "active" {
                    a.status = "terminated";
                }
            }
        }
        Ok(())
    }

    /// Lists tasks as NWC does: the filters, the default window, one page.
    /// A task still within its `after_polls` is missed, and counts one down.
    pub fn list_tasks(&mut self, q: &TaskQuery, now: SystemTime) -> Page {
        let from = q.from.unwrap_or_else(|| {
            now.checked_sub(self.window)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        });
        let to = q.to.unwrap_or(now);
        // By instance, the usual query: only that instance's tasks.
        let candidates: Vec<usize> = match &q.instance_id {
            Some(id) => self
                .tasks_of
                .get(&id.to_ascii_lowercase())
                .cloned()
                .unwrap_or_default(),
            None => (0..self.tasks.len()).collect(),
        };
        let mut wanted_at = Vec::new();
        for at in candidates {
            let task = &mut self.tasks[at];
            let wanted = task.exists(now)
                && task.created >= from
                && task.created <= to
                && q.instance_id
                    .as_ref()
                    .is_none_or(|id| id.eq_ignore_ascii_case(&task.instance_id))
                && q.workflow_name
                    .as_ref()
                    .is_none_or(|n| n.eq_ignore_ascii_case(&task.workflow_name))
                && q.assignee.as_ref().is_none_or(|a| {
                    task.assignments
                        .iter()
                        .any(|x| x.assignee.eq_ignore_ascii_case(a))
                })
                && q.status
                    .as_deref()
                    .is_none_or(|s| s == "all" || s == task.status);
            if !wanted {
                continue;
            }
            if task.hidden_polls > 0 {
                task.hidden_polls -= 1;
                continue;
            }
            wanted_at.push(at);
        }
        let end = (q.skip + self.page_size).min(wanted_at.len());
        let tasks = wanted_at[q.skip.min(end)..end]
            .iter()
            .map(|&at| {
                let t = &mut self.tasks[at];
                if t.cached_json.is_none() {
                    t.cached_json = Some(task_json(t).to_string().into());
                }
                t.cached_json.clone().unwrap_or_default()
            })
            .collect();
        Page {
            tasks,
            next_skip: (end < wanted_at.len()).then_some(end),
        }
    }

    pub fn task(&self, id: &str, now: SystemTime) -> Result<&Task, Problem> {
        self.task_at
            .get(&id.to_ascii_lowercase())
            .map(|&at| &self.tasks[at])
            .filter(|t| t.exists(now))
            .ok_or_else(|| Problem::not_found(format!("no task with id `{id}`")))
    }

    fn task_mut(&mut self, id: &str, now: SystemTime) -> Result<&mut Task, Problem> {
        let at = self.task_at.get(&id.to_ascii_lowercase()).copied();
        at.map(|at| &mut self.tasks[at])
            .filter(|t| t.exists(now))
            .ok_or_else(|| Problem::not_found(format!("no task with id `{id}`")))
    }

    fn instance_mut(&mut self, id: &str) -> Result<&mut Instance, Problem> {
        let at = self.instance_at.get(&id.to_ascii_lowercase()).copied();
        at.map(|at| &mut self.instances[at])
            .ok_or_else(|| Problem::not_found(format!("no workflow instance with id `{id}`")))
    }

    pub fn instance(&self, id: &str) -> Result<&Instance, Problem> {
        self.instance_at
            .get(&id.to_ascii_lowercase())
            .map(|&at| &self.instances[at])
            .ok_or_else(|| Problem::not_found(format!("no workflow instance with id `{id}`")))
    }

    /// Completes a task, or one assignment of it, with an outcome. On success
    /// the other open assignments are overridden and the waiting instance
    /// continues down the outcome's branch.
    pub fn complete(
        &mut self,
        task_id: &str,
        assignment_id: Option<&str>,
        outcome: &str,
        now: SystemTime,
        conflict_status: u16,
    ) -> Result<(), Problem> {
        let task = self.task_mut(task_id, now)?;
        task.completion_attempts += 1;
        let index = match assignment_id {
            Some(aid) => task
                .assignments
                .iter()
                .position(|a| a.id.eq_ignore_ascii_case(aid))
                .ok_or_else(|| {
                    Problem::not_found(format!(
                        "task `{task_id}` has no assignment with id `{aid}`"
                    ))
                })?,
            None => task
                .assignments
                .iter()
                .position(|a| a.status == "active")
                .unwrap_or(0),
        };
        if task.status != "active" {
            let done = task
                .assignments
                .iter()
                .find_map(|a| a.outcome.clone())
                .map(|o| format!(" with outcome `{o}`"))
                .unwrap_or_default();
            return Err(Problem::new(
                conflict_status,
                "Conflict",
                format!("task `{task_id}` is already {}{done}", task.status),
            ));
        }
        if !task.outcomes.iter().any(|o| o == outcome) {
            return Err(Problem::bad_request(format!(
                "outcome `{outcome}` is not one of the task's outcomes: {}",
                task.outcomes.join(", ")
            )));
        }
        for (i, a) in task.assignments.iter_mut().enumerate() {
            if i == index {
                a.status = "complete";
                a.outcome = Some(outcome.to_string());
                a.completed_by = Some(a.assignee.clone());
                a.completed = Some(now);
            } else if a.status == "active" {
                a.status = "overridden";
            }
        }
        task.status = "complete";
        task.completed = Some(now);
        task.modified = now;
        task.completions += 1;
        task.cached_json = None;
        let instance_id = task.instance_id.clone();
        if let Some(&at) = self.instance_at.get(&instance_id.to_ascii_lowercase()) {
            let instance = &mut self.instances[at];
            instance.outcome = Some(outcome.to_string());
            instance.finished = Some(now);
            instance.status = "completed";
        }
        Ok(())
    }
}

/// A task as NWC shows it.
pub fn task_json(t: &Task) -> Value {
    json!({
        "id": t.id,
        "name": "Await Completion",
        "description": "",
        "subject": "Await Completion",
        "message": "<p>Complete this task when the external work is done.</p>",
        "status": t.status,
        "outcomes": t.outcomes,
        "workflowId": t.workflow_id,
        "workflowInstanceId": t.instance_id,
        "workflowName": t.workflow_name,
        "initiator": "someone@contoso.com",
        "assignmentBehavior": "AllParallel",
        "completionCriteria": "FirstResponse",
        "isAuthenticated": true,
        "createdDate": timestamp(t.created),
        "modified": timestamp(t.modified),
        "dueDate": Value::Null,
        "completedDate": opt_timestamp(t.completed),
        "taskAssignments": t.assignments.iter().map(|a| json!({
            "id": a.id,
            "assignee": a.assignee,
            "status": a.status,
            "outcome": a.outcome,
            "completedBy": a.completed_by,
            "completedById": a.completed_by.as_ref().map(|_| "svc-worker-id"),
            "completedDate": opt_timestamp(a.completed),
            "createdDate": timestamp(t.created),
            "updatedDate": timestamp(a.completed.unwrap_or(t.created)),
            "escalatedTo": Value::Null,
            "urls": { "formUrl": format!("https://sim.nintex.invalid/forms/{}", a.id) },
        })).collect::<Vec<_>>(),
    })
}

/// An instance as NWC shows it. `outcome` is the simulator's own addition:
/// the branch the instance continued down once its task was completed.
pub fn instance_json(i: &Instance) -> Value {
    let waiting = i.finished.is_none() && !i.task_id.is_empty();
    let mut v = json!({
        "instanceId": i.id,
        "status": i.status,
        "startDateTime": timestamp(i.started),
        "endDateTime": opt_timestamp(i.finished),
        "workflow": { "id": i.workflow_id, "name": i.workflow_name },
        "startData": i.start_data,
        "actions": [{
            "actionInstanceId": format!("{}-action", i.id),
            "startDateTime": timestamp(i.started),
            "endDateTime": opt_timestamp(i.finished),
            "errorMessage": i.error,
        }],
        "waitingOnTask": if waiting { Value::String(i.task_id.clone()) } else { Value::Null },
        "outcome": i.outcome,
    });
    if let Some(c) = &i.callout {
        v["callout"] = json!({
            "url": c.url,
            "answers": c.answers,
            "calledBack": c.called_back,
        });
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_748_822_400 + secs)
    }

    fn world() -> World {
        World::new(7, Duration::from_secs(30 * 86_400), 2)
    }

    fn query(pairs: &[(&str, &str)]) -> TaskQuery {
        let pairs: Vec<_> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        TaskQuery::parse(&pairs).unwrap()
    }

    #[test]
    fn a_task_exists_only_after_its_delay_and_its_polls() {
        let mut w = world();
        let mut spec = InstanceSpec::new(Duration::from_secs(10));
        spec.after_polls = 1;
        let (instance, task) = w.start_instance(spec, at(0));
        let q = query(&[("workflowInstanceId", &instance)]);
        assert!(w.list_tasks(&q, at(5)).tasks.is_empty(), "before the delay");
        assert!(w.task(&task, at(5)).is_err());
        assert!(
            w.list_tasks(&q, at(10)).tasks.is_empty(),
            "the one hidden poll"
        );
        let page = w.list_tasks(&q, at(11));
        assert_eq!(page.tasks.len(), 1);
        let listed: Value = serde_json::from_str(&page.tasks[0]).unwrap();
        assert_eq!(listed["id"], task.as_str());
    }

    #[test]
    fn filters_window_and_pages() {
        let mut w = world();
        for _ in 0..5 {
            w.start_instance(InstanceSpec::new(Duration::ZERO), at(0));
        }
        let mut old = InstanceSpec::new(Duration::ZERO);
        old.age = Duration::from_secs(40 * 86_400);
        w.start_instance(old, at(0));
        let all = query(&[("status", "Active")]);
        let first = w.list_tasks(&all, at(1));
        assert_eq!((first.tasks.len(), first.next_skip), (2, Some(2)));
        let last = w.list_tasks(&TaskQuery { skip: 4, ..all }, at(1));
        assert_eq!((last.tasks.len(), last.next_skip), (1, None));
        let wide = query(&[("from", "2025-01-01")]);
        let mut total = 0;
        let mut skip = Some(0);
        while let Some(s) = skip {
            let page = w.list_tasks(
                &TaskQuery {
                    skip: s,
                    ..wide.clone()
                },
                at(1),
            );
            total += page.tasks.len();
            skip = page.next_skip;
        }
        assert_eq!(
            total, 6,
            "an explicit `from` reaches past the 30-day window"
        );
        assert!(TaskQuery::parse(&[("status".into(), "open".into())]).is_err());
        for date in [
            "2025-02-01",
            "2025-02-01T00:00:00.000Z",
            "2025-02-01T00:00:00.123456Z",
        ] {
            assert!(parse_date("from", date).is_ok(), "{date}");
        }
    }

    #[test]
    fn completion_rules() {
        let mut w = world();
        let mut spec = InstanceSpec::new(Duration::ZERO);
        spec.assignees.push("someone@contoso.com".into());
        let (instance, task) = w.start_instance(spec, at(0));
        let bad = w.complete(&task, None, "Approved", at(1), 409).unwrap_err();
        assert_eq!(bad.status, 400);
        assert_eq!(
            w.complete("nope", None, "Completed", at(1), 409)
                .unwrap_err()
                .status,
            404
        );
        w.complete(&task, None, "Completed", at(1), 409).unwrap();
        let again = w
            .complete(&task, None, "Completed", at(2), 409)
            .unwrap_err();
        assert_eq!(again.status, 409);
        assert!(again.detail.contains("`Completed`"), "{}", again.detail);
        let t = w.task(&task, at(2)).unwrap();
        assert_eq!((t.completions, t.completion_attempts), (1, 3));
        assert_eq!(t.assignments[1].status, "overridden");
        let i = w.instance(&instance).unwrap();
        assert_eq!(i.outcome.as_deref(), Some("Completed"));
        assert_eq!(instance_json(i)["status"], "completed");
    }

    #[test]
    fn ids_are_stable_for_a_seed() {
        let (mut a, mut b) = (Ids::new(1), Ids::new(1));
        assert_eq!(a.guid(), b.guid());
        assert_eq!(a.guid().len(), 36);
    }
}
