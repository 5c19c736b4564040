//! NAC's side of "Call a web service – Wait for callback": an instance's
//! action POSTs to a worker's URL with a callback URL, then waits until that
//! URL is called with the branch to take.
//!
//! The shape of the call-out is not documented publicly; this one is an
//! assumption (docs/simulator.md says so), kept here in one place so it is
//! easy to change:
//!
//! ```json
//! {"instanceId": "…", "workflowId": "…", "workflowName": "…",
//!  "callbackUrl": "http://…/workflows/v1/instances/{id}/callbacks/{callbackId}",
//!  "outcomes": ["Completed", "Canceled"], "startData": {…}}
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::sim::shared::Shared;

/// Tries before the action gives up on the worker: NAC retries a busy or
/// unreachable endpoint a few times.
const ATTEMPTS: u32 = 5;
const TIMEOUT: Duration = Duration::from_secs(10);

/// The path the callback comes back to.
pub fn callback_path(instance_id: &str, callback_id: &str) -> String {
    format!("/workflows/v1/instances/{instance_id}/callbacks/{callback_id}")
}

/// Where a call-out goes, with what.
pub struct CallOut {
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

/// The call-out's body, as the assumption above says.
pub fn body(shared: &Shared, instance_id: &str) -> Option<CallOut> {
    let world = shared.lock_world();
    let i = world.instances.iter().find(|i| i.id == instance_id)?;
    let c = i.callout.as_ref()?;
    let callback = format!(
        "http://{}{}",
        shared.addr,
        callback_path(&i.id, &c.callback_id)
    );
    Some(CallOut {
        url: c.url.clone(),
        headers: c.headers.clone(),
        body: json!({
            "instanceId": i.id,
            "workflowId": i.workflow_id,
            "workflowName": i.workflow_name,
            "callbackUrl": callback,
            "outcomes": c.outcomes,
            "startData": i.start_data,
        }),
    })
}

/// Calls the worker for each instance, in the background, retrying
/// connection failures, 429 and 5xx with a doubling pause. Each answer is
/// kept on the instance, for `/_sim/state`.
pub fn call_out(shared: Arc<Shared>, client: reqwest::Client, instance_ids: Vec<String>) {
    for id in instance_ids {
        let shared = shared.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let Some(CallOut { url, headers, body }) = body(&shared, &id) else {
                return;
            };
            let mut pause = Duration::from_millis(100);
            for attempt in 1..=ATTEMPTS {
                let mut request = client.post(&url).timeout(TIMEOUT).json(&body);
                for (name, value) in &headers {
                    request = request.header(name, value);
                }
                let (answer, again) = match request.send().await {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        (s.to_string(), s == 429 || s >= 500)
                    }
                    Err(e) if e.is_timeout() => ("timeout".to_string(), true),
                    Err(_) => ("no connection".to_string(), true),
                };
                record(&shared, &id, answer);
                if !again || attempt == ATTEMPTS {
                    break;
                }
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        });
    }
}

fn record(shared: &Shared, id: &str, answer: String) {
    let mut world = shared.lock_world();
    if let Some(c) = world
        .instances
        .iter_mut()
        .find(|i| i.id == id)
        .and_then(|i| i.callout.as_mut())
    {
        c.answers.push(answer);
    }
}
