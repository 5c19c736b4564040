//! `handoff sim`: the built-in NWC simulator, on a port of its own.

use crate::cli::common::{EXIT_FAILED, EXIT_OK, duration_arg};
use crate::run::clock::SystemClock;
use crate::sim::shared::SimConfig;
use std::io::Write;
use std::sync::Arc;
use std::time::SystemTime;

#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// The port to listen on; 0 picks a free one.
    #[arg(long, default_value_t = 8787)]
    pub port: u16,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// The personal access token the simulator accepts.
    #[arg(long, env = "HANDOFF_SIM_TOKEN", default_value = crate::sim::shared::DEFAULT_TOKEN, hide_env_values = true)]
    pub token: String,
    /// The client id `POST /authentication/v1/token` accepts.
    #[arg(long, default_value = "sim-client")]
    pub client_id: String,
    /// The client secret `POST /authentication/v1/token` accepts.
    #[arg(
        long,
        env = "HANDOFF_SIM_CLIENT_SECRET",
        default_value = "sim-secret",
        hide_env_values = true
    )]
    pub client_secret: String,
    /// How long after an instance starts NWC creates its task.
    #[arg(long, default_value = "2s", value_parser = duration_arg)]
    pub task_delay: std::time::Duration,
    /// Tasks per page before `nextLink`.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub page_size: u32,
    /// Seed for ids, so a session can be replayed; random when absent.
    #[arg(long)]
    pub seed: Option<u64>,
    /// How far back a task list without `from` reaches.
    #[arg(long, default_value = "30days", value_parser = duration_arg)]
    pub window: std::time::Duration,
    /// The status of a successful completion: 204 (no body) or 200 (the task).
    #[arg(long, default_value_t = 204, value_parser = complete_status)]
    pub complete_status: u16,
    /// The status for completing a task that is already complete: 409 or 400.
    #[arg(long, default_value_t = 409, value_parser = conflict_status)]
    pub conflict_status: u16,
    /// How long an app token from `POST /authentication/v1/token` is accepted.
    #[arg(long, default_value = "1h", value_parser = duration_arg)]
    pub token_ttl: std::time::Duration,
    /// Refuse the task-level completion (`PATCH /workflows/v1/tasks/{id}`),
    /// as current NWC may: only the assignment form works then.
    #[arg(long)]
    pub no_legacy_task_patch: bool,
    /// Start this many waiting instances, and print their ids.
    #[arg(long, default_value_t = 0)]
    pub instances: u32,
    /// Do not print a line per request.
    #[arg(long, short)]
    pub quiet: bool,
}

pub async fn sim_command(args: SimArgs) -> i32 {
    let custom_token = args.token != crate::sim::shared::DEFAULT_TOKEN;
    let config = SimConfig {
        token: args.token,
        client_id: args.client_id,
        client_secret: args.client_secret,
        task_delay: args.task_delay,
        page_size: args.page_size as usize,
        seed: args.seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        }),
        window: args.window,
        complete_status: args.complete_status,
        conflict_status: args.conflict_status,
        print_requests: !args.quiet,
        token_ttl: args.token_ttl,
        issued_token_prefix: "sim-app-".to_string(),
        legacy_task_patch: !args.no_legacy_task_patch,
    };
    let addr = std::net::SocketAddr::new(args.host, args.port);
    let server = match crate::sim::start(config, Arc::new(SystemClock::new()), addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "error: cannot listen on {addr}: {}",
                crate::language::source::io_reason(&e)
            );
            if e.kind() == std::io::ErrorKind::AddrInUse {
                eprintln!("help: pick another port with `--port N`, or `--port 0` for a free one");
            }
            return EXIT_FAILED;
        }
    };
    let base = server.base_url.clone();
    // The first line is the base URL, so scripts can read it.
    println!("handoff sim listening on {base}");
    let token_shown = if custom_token {
        "$NWC_TOKEN (the value given with --token)".to_string()
    } else {
        crate::sim::shared::DEFAULT_TOKEN.to_string()
    };
    println!("  point a flow at it: NWC_BASE_URL={base} NWC_TOKEN={token_shown}");
    println!(
        "  control: POST /_sim/instances · POST|GET|DELETE /_sim/faults · GET /_sim/state · GET /_sim/requests"
    );
    if args.instances > 0 {
        let now = server.shared.clock.now();
        let mut world = server.shared.lock_world();
        for _ in 0..args.instances {
            let spec = crate::sim::model::InstanceSpec::new(args.task_delay);
            let (id, task) = world.start_instance(spec, now);
            println!("  instance {id} waits on task {task}");
        }
    }
    println!("  Ctrl-C stops it");
    let _ = std::io::stdout().flush();
    match server
        .serve_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("error: the simulator stopped: {e}");
            EXIT_FAILED
        }
    }
}

pub fn complete_status(text: &str) -> Result<u16, String> {
    one_of(text, &[204, 200])
}

pub fn conflict_status(text: &str) -> Result<u16, String> {
    one_of(text, &[409, 400])
}

pub fn one_of(text: &str, allowed: &[u16]) -> Result<u16, String> {
    text.parse()
        .ok()
        .filter(|n| allowed.contains(n))
        .ok_or_else(|| format!("expected one of {allowed:?}"))
}
