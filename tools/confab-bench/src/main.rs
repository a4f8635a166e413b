//! confab-bench: load scenarios that speak the Confab protocol, against any Confab server.
//!
//! Every run is bounded in time and count, targets loopback only, and prints one JSON line
//! (plus a human summary on stderr). See BENCHMARKS.md for the method and the figures.
//!
//!   confab-bench fanout  --url ws://127.0.0.1:3000/ws --clients 100 --senders 10
//!   confab-bench latency --clients 1000 --rate 100
//!   confab-bench rooms   --rooms 1000 --members 10 --rate 1
//!   confab-bench idle    --clients 10000 --server-pid $(pidof confab)
//!   confab-bench slow    --clients 100 --senders 10
//!   confab-bench ingest  --clients 64 --rooms 64
//!   confab-bench read-flood --clients 64

use clap::{Parser, ValueEnum};
use confab::protocol::{Seq, ServerMsg};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tokio::{sync::Semaphore, time::sleep};
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Scenario {
    /// Many clients in one room, a few senders as fast as the slowest reader allows.
    Fanout,
    /// Many clients in one room, one sender at a fixed rate: delivery latency.
    Latency,
    /// Many rooms with a few members each, every member sending at a fixed rate.
    Rooms,
    /// Connections that join a room and hold: memory per connection, all held?
    Idle,
    /// Busy room plus one client that never reads: is it cut, do the others suffer?
    Slow,
    /// Many senders across many rooms as fast as acknowledged: stored messages per second.
    Ingest,
    /// `--clients` HTTP clients read 500-message history pages as fast as they can while
    /// one WebSocket client joins and leaves an empty room: the join's latency.
    ReadFlood,
}

#[derive(Debug, Parser)]
#[command(name = "confab-bench", about = "Load scenarios for a Confab server (loopback only)")]
struct Args {
    scenario: Scenario,
    #[arg(long, default_value = "ws://127.0.0.1:3000/ws")]
    url: String,
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Clients that send (fanout, latency, slow, ingest); rooms: every member sends.
    #[arg(long, default_value_t = 10)]
    senders: usize,
    /// Messages per second per sender (0 = as fast as the window allows).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Unacknowledged messages a closed-loop sender keeps in flight.
    #[arg(long, default_value_t = 16)]
    window: usize,
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Rooms (rooms, ingest).
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Members per room (rooms).
    #[arg(long, default_value_t = 10)]
    members: usize,
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// New connections per second.
    #[arg(long, default_value_t = 2000.0)]
    connect_rate: f64,
    /// Server process to read RSS and CPU from (/proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Other processes whose CPU counts with the server's (other nodes, PostgreSQL,
    /// Redis): a comma list.
    #[arg(long, value_delimiter = ',')]
    extra_pids: Vec<u32>,
    #[arg(long, default_value = "confab-bench")]
    label: String,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

fn proc_rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// utime + stime of a process, in seconds.
fn proc_cpu_s(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// CPU seconds of the server and every `--extra-pids` process (those that are gone
/// count nothing).
fn cluster_cpu_s(args: &Args) -> Option<f64> {
    let server = proc_cpu_s(args.server_pid?)?;
    Some(server + args.extra_pids.iter().filter_map(|&p| proc_cpu_s(p)).sum::<f64>())
}

/// The fields of a server frame the bench looks at, borrowed from the frame.
#[derive(serde::Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    room: Option<&'a str>,
    seq: Option<Seq>,
    nick: Option<&'a str>,
    #[serde(borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
}

struct Lite<'a> {
    seq: Seq,
    nick: &'a str,
    text: &'a str,
}

/// Shared counters for one run.
#[derive(Default)]
struct Stats {
    delivered: AtomicU64,
    sent: AtomicU64,
    /// Own messages echoed back: stored and acknowledged.
    acked: AtomicU64,
    gaps: AtomicU64,
    duplicates: AtomicU64,
    errors: AtomicU64,
    closed: AtomicU64,
    slow_close_code: AtomicU64,
    latencies_us: Mutex<Vec<u32>>,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, nick: &str, rooms: &[String]) -> anyhow::Result<Ws> {
    // No Nagle on the client side either: the send timestamps must mean "sent now".
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    ws.send(Message::text(json!({"type": "hello", "nick": nick}).to_string())).await?;
    for room in rooms {
        ws.send(Message::text(json!({"type": "join", "room": room}).to_string())).await?;
    }
    // Wait for the welcome and every join's answer before counting this client as ready.
    let mut answered = 0;
    while answered < rooms.len() + 1 {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match serde_json::from_str::<ServerMsg>(&t)? {
                ServerMsg::Welcome { .. } | ServerMsg::Joined { .. } => answered += 1,
                ServerMsg::Error { code, message, .. } => anyhow::bail!("{code}: {message}"),
                _ => {}
            },
            Some(Ok(_)) => {}
            _ => anyhow::bail!("closed during set-up"),
        }
    }
    Ok(ws)
}

/// What one client does once connected.
#[derive(Clone)]
struct Role {
    nick: String,
    room: String,
    /// Sends at `rate` (or closed-loop with `window` when rate is 0).
    sends: bool,
    /// Never reads (the slow reader).
    never_reads: bool,
    /// Where in the send interval this sender starts (0..1): senders are spread evenly
    /// over one interval, as real people are, instead of all firing at once.
    phase: f64,
}

struct Run {
    args: Args,
    stats: Stats,
    /// Messages are counted (and sent) only while this is set: after the warmup.
    measuring: AtomicBool,
    stop: AtomicBool,
}

/// One client: sends per its role, reads everything, checks per-room seq continuity.
async fn client(run: Arc<Run>, ws: Ws, role: Role) {
    let (mut sink, mut stream) = ws.split();
    let me = role.nick.clone();
    let outstanding = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(tokio::sync::Notify::new());
    let sender = role.sends.then(|| {
        let run = run.clone();
        let room = role.room.clone();
        let phase = role.phase;
        let outstanding = outstanding.clone();
        let acked = acked.clone();
        tokio::spawn(async move {
            let pad = "x".repeat(run.args.size.saturating_sub(40));
            let interval = (run.args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / run.args.rate));
            let mut next =
                tokio::time::Instant::now() + interval.map_or(Duration::ZERO, |i| i.mul_f64(phase));
            let mut n = 0u64;
            while !run.stop.load(Relaxed) {
                match interval {
                    Some(every) => {
                        next += every;
                        tokio::time::sleep_until(next).await;
                    }
                    None => {
                        while outstanding.load(Relaxed) >= run.args.window && !run.stop.load(Relaxed) {
                            let _ = tokio::time::timeout(Duration::from_millis(100), acked.notified()).await;
                        }
                    }
                }
                let text = format!("t:{}:{pad}", now_ns());
                let frame =
                    json!({"type": "send", "room": room, "text": text, "client_id": format!("{}-{n}", room)});
                n += 1;
                outstanding.fetch_add(1, Relaxed);
                if run.measuring.load(Relaxed) {
                    run.stats.sent.fetch_add(1, Relaxed);
                }
                if sink.send(Message::text(frame.to_string())).await.is_err() {
                    return;
                }
            }
        })
    });
    if role.never_reads {
        // Hold the socket without reading until the run ends, then see how it ended.
        while !run.stop.load(Relaxed) {
            sleep(Duration::from_millis(50)).await;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(2), stream.next()).await {
                Ok(Some(Ok(Message::Close(Some(cf))))) => {
                    run.stats.slow_close_code.store(u16::from(cf.code) as u64, Relaxed);
                    return;
                }
                Ok(Some(Ok(_))) => {}
                _ => return,
            }
        }
        return;
    }
    let mut last: HashMap<String, Seq> = HashMap::new();
    while let Some(frame) = stream.next().await {
        let text = match frame {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => {
                run.stats.closed.fetch_add(1, Relaxed);
                break;
            }
            Ok(_) => continue,
        };
        // A borrowed, allocation-free view of the frame: the bench must stay cheap so that it
        // measures the server, not itself.
        match serde_json::from_str::<Frame>(&text) {
            Ok(m) if m.kind == "message" => {
                let (room, seq, nick) = (m.room.unwrap_or(""), m.seq.unwrap_or(0), m.nick.unwrap_or(""));
                let prev = match last.get_mut(room) {
                    Some(prev) => std::mem::replace(prev, seq),
                    None => {
                        last.insert(room.to_owned(), seq);
                        seq - 1
                    }
                };
                let m = Lite { seq, nick, text: m.text.as_deref().unwrap_or("") };
                if m.seq <= prev {
                    run.stats.duplicates.fetch_add(1, Relaxed);
                } else if m.seq > prev + 1 && prev != 0 {
                    run.stats.gaps.fetch_add(m.seq - prev - 1, Relaxed);
                }
                if m.nick == me {
                    outstanding.fetch_sub(1, Relaxed);
                    acked.notify_one();
                    if run.measuring.load(Relaxed) {
                        run.stats.acked.fetch_add(1, Relaxed);
                    }
                }
                if run.measuring.load(Relaxed) {
                    run.stats.delivered.fetch_add(1, Relaxed);
                    if let Some(sent) = m
                        .text
                        .strip_prefix("t:")
                        .and_then(|t| t.split(':').next())
                        .and_then(|t| t.parse::<u64>().ok())
                    {
                        let us = (now_ns().saturating_sub(sent) / 1000).min(u32::MAX as u64) as u32;
                        run.stats.latencies_us.lock().unwrap().push(us);
                    }
                }
            }
            Ok(m) if m.kind == "error" => {
                run.stats.errors.fetch_add(1, Relaxed);
            }
            _ => {}
        }
        if run.stop.load(Relaxed) && outstanding.load(Relaxed) == 0 {
            break;
        }
    }
    if let Some(s) = sender {
        s.abort();
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.url.split(',').all(|u| u.starts_with("ws://127.")
            || u.starts_with("ws://localhost")
            || u.starts_with("ws://[::1]")),
        "confab-bench only targets loopback addresses"
    );
    let run_id = now_ns() % 1_000_000_000;
    if args.scenario == Scenario::ReadFlood {
        return read_flood(args, run_id).await;
    }
    // Who does what.
    let mut roles = Vec::new();
    match args.scenario {
        Scenario::Rooms => {
            for r in 0..args.rooms {
                for m in 0..args.members {
                    roles.push(Role {
                        nick: format!("b{run_id}-{r}-{m}"),
                        room: format!("bench-{run_id}-{r}"),
                        sends: true,
                        never_reads: false,
                        phase: 0.0,
                    });
                }
            }
        }
        Scenario::Ingest => {
            for i in 0..args.clients {
                roles.push(Role {
                    nick: format!("b{run_id}-{i}"),
                    room: format!("bench-{run_id}-{}", i % args.rooms.max(1)),
                    sends: true,
                    never_reads: false,
                    phase: 0.0,
                });
            }
        }
        _ => {
            for i in 0..args.clients {
                let sends = args.scenario != Scenario::Idle && i < args.senders;
                roles.push(Role {
                    nick: format!("b{run_id}-{i}"),
                    room: format!("bench-{run_id}"),
                    sends,
                    never_reads: false,
                    phase: 0.0,
                });
            }
            if args.scenario == Scenario::Slow {
                roles.push(Role {
                    nick: format!("b{run_id}-slow"),
                    room: format!("bench-{run_id}"),
                    sends: false,
                    never_reads: true,
                    phase: 0.0,
                });
            }
        }
    }
    let senders = roles.iter().filter(|r| r.sends).count().max(1);
    for (i, role) in roles.iter_mut().filter(|r| r.sends).enumerate() {
        role.phase = i as f64 / senders as f64;
    }
    let rss_before = args.server_pid.and_then(proc_rss_kb);
    let run = Arc::new(Run {
        args,
        stats: Stats::default(),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });

    // Connect at the configured rate, a bounded number of handshakes at a time.
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(64));
    let mut sockets = Vec::with_capacity(roles.len());
    let mut pending = Vec::new();
    let every = Duration::from_secs_f64(1.0 / run.args.connect_rate.max(1.0));
    // A comma list of URLs spreads the clients over several nodes (client i on URL i mod n).
    let urls: Vec<String> = run.args.url.split(',').map(str::to_owned).collect();
    for (i, role) in roles.into_iter().enumerate() {
        let url = urls[i % urls.len()].clone();
        let permit = gate.clone().acquire_owned().await?;
        pending.push(tokio::spawn(async move {
            let ws = connect(&url, &role.nick, std::slice::from_ref(&role.room)).await;
            drop(permit);
            (role, ws)
        }));
        sleep(every).await;
    }
    let mut failed = 0;
    for p in pending {
        match p.await? {
            (role, Ok(ws)) => sockets.push((role, ws)),
            (_, Err(e)) => {
                failed += 1;
                if failed <= 3 {
                    eprintln!("connect failed: {e}");
                }
            }
        }
    }
    let connect_s = started.elapsed().as_secs_f64();
    let held = sockets.len();
    sleep(Duration::from_millis(500)).await;
    let rss_connected = run.args.server_pid.and_then(proc_rss_kb);

    let tasks: Vec<_> =
        sockets.into_iter().map(|(role, ws)| tokio::spawn(client(run.clone(), ws, role))).collect();
    sleep(Duration::from_secs_f64(run.args.warmup)).await;
    let cpu_before = cluster_cpu_s(&run.args);
    let bench_cpu_before = proc_cpu_s(std::process::id());
    let t0 = Instant::now();
    run.measuring.store(true, Relaxed);
    sleep(Duration::from_secs_f64(run.args.duration)).await;
    run.measuring.store(false, Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = cluster_cpu_s(&run.args).zip(cpu_before).map(|(a, b)| a - b);
    let bench_cpu = proc_cpu_s(std::process::id()).zip(bench_cpu_before).map(|(a, b)| a - b);
    run.stop.store(true, Relaxed);
    // Drain: let in-flight messages arrive (bounded).
    let drain = Instant::now();
    for t in tasks {
        let left = Duration::from_secs(10).saturating_sub(drain.elapsed());
        let _ = tokio::time::timeout(left, t).await;
    }
    let rss_end = run.args.server_pid.and_then(proc_rss_kb);

    let s = &run.stats;
    let mut lat = std::mem::take(&mut *s.latencies_us.lock().unwrap());
    lat.sort_unstable();
    let delivered = s.delivered.load(Relaxed);
    let per_sec = delivered as f64 / elapsed;
    let cpu_us_per_delivery = cpu.map(|c| c * 1e6 / delivered.max(1) as f64);
    let per_conn_kb =
        rss_before.zip(rss_connected).map(|(b, c)| (c.saturating_sub(b)) as f64 / held.max(1) as f64);
    let out = json!({
        "label": run.args.label,
        "scenario": format!("{:?}", run.args.scenario).to_lowercase(),
        "clients": held,
        "connect_failed": failed,
        "connect_s": connect_s,
        "duration_s": elapsed,
        "sent": s.sent.load(Relaxed),
        "acked_per_sec": s.acked.load(Relaxed) as f64 / elapsed,
        "delivered": delivered,
        "delivered_per_sec": per_sec,
        "gaps": s.gaps.load(Relaxed),
        "duplicates": s.duplicates.load(Relaxed),
        "errors": s.errors.load(Relaxed),
        "closed_early": s.closed.load(Relaxed),
        "latency_ms_p50": percentile(&lat, 0.50),
        "latency_ms_p99": percentile(&lat, 0.99),
        "latency_ms_max": percentile(&lat, 1.0),
        "server_cpu_s": cpu,
        "bench_cpu_s": bench_cpu,
        "server_cpu_us_per_delivery": cpu_us_per_delivery,
        "server_rss_kb_before": rss_before,
        "server_rss_kb_connected": rss_connected,
        "server_rss_kb_end": rss_end,
        "server_rss_kb_per_conn": per_conn_kb,
        "slow_close_code": match s.slow_close_code.load(Relaxed) { 0 => None, c => Some(c) },
    });
    println!("{out}");
    eprintln!(
        "{:?}: {held} clients ({failed} failed), {} acked/s, {delivered} deliveries in {elapsed:.1}s = {per_sec:.0}/s, p50 {:.2} ms, p99 {:.2} ms, gaps {}, dups {}{}",
        run.args.scenario,
        (s.acked.load(Relaxed) as f64 / elapsed) as u64,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        s.gaps.load(Relaxed),
        s.duplicates.load(Relaxed),
        cpu_us_per_delivery.map(|c| format!(", server {c:.2} µs CPU/delivery")).unwrap_or_default(),
    );
    Ok(())
}

/// The read-flood scenario: do readers of history slow down everyone else's joins?
async fn read_flood(args: Args, run_id: u64) -> anyhow::Result<()> {
    let http = args.url.replacen("ws://", "http://", 1).trim_end_matches("/ws").to_owned();
    let history_room = format!("bench-{run_id}-history");
    // A history worth reading: 500 messages of `--size` bytes.
    let mut writer = connect(&args.url, &format!("b{run_id}-w"), std::slice::from_ref(&history_room)).await?;
    let pad = "x".repeat(args.size);
    for n in 0..500 {
        let frame = json!({"type": "send", "room": history_room, "text": pad, "client_id": format!("h{n}")});
        writer.send(Message::text(frame.to_string())).await?;
    }
    let mut acked = 0;
    while acked < 500 {
        match writer.next().await {
            Some(Ok(Message::Text(t))) if t.contains("\"type\":\"message\"") => acked += 1,
            Some(Ok(Message::Text(t))) if t.contains("\"type\":\"error\"") => anyhow::bail!("filling: {t}"),
            Some(Ok(_)) => {}
            _ => anyhow::bail!("closed while filling the history"),
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let read_errors = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::new();
    let readers: Vec<_> = (0..args.clients)
        .map(|_| {
            let (client, stop, reads, read_errors) =
                (client.clone(), stop.clone(), reads.clone(), read_errors.clone());
            let url = format!("{http}/api/rooms/{history_room}/messages?limit=500");
            tokio::spawn(async move {
                while !stop.load(Relaxed) {
                    match client.get(&url).send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            reads.fetch_add(1, Relaxed);
                        }
                        _ => {
                            read_errors.fetch_add(1, Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let mut joiner = connect(&args.url, &format!("b{run_id}-j"), &[]).await?;
    sleep(Duration::from_secs_f64(args.warmup)).await;
    let cpu_before = args.server_pid.and_then(proc_cpu_s);
    let reads_before = reads.load(Relaxed);
    let t0 = Instant::now();
    let mut lat = Vec::new();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < args.duration {
        // A new empty room each time: it is created, replayed (nothing) and forgotten.
        let room = format!("bench-{run_id}-empty-{n}");
        n += 1;
        let asked = Instant::now();
        joiner.send(Message::text(json!({"type": "join", "room": room}).to_string())).await?;
        loop {
            match joiner.next().await {
                Some(Ok(Message::Text(t))) if t.contains("\"type\":\"joined\"") => break,
                Some(Ok(Message::Text(t))) if t.contains("\"type\":\"error\"") => anyhow::bail!("join: {t}"),
                Some(Ok(_)) => {}
                _ => anyhow::bail!("the joiner was closed"),
            }
        }
        lat.push((asked.elapsed().as_micros()).min(u32::MAX as u128) as u32);
        joiner.send(Message::text(json!({"type": "leave", "room": room}).to_string())).await?;
        // Joins are rate limited (5/s, burst 10): pace them under it.
        sleep(Duration::from_millis(250)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu = args.server_pid.and_then(proc_cpu_s).zip(cpu_before).map(|(a, b)| a - b);
    stop.store(true, Relaxed);
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
    }
    lat.sort_unstable();
    let read_rate = (reads.load(Relaxed) - reads_before) as f64 / elapsed;
    let out = json!({
        "label": args.label,
        "scenario": "read-flood",
        "clients": args.clients,
        "duration_s": elapsed,
        "joins": lat.len(),
        "join_ms_p50": percentile(&lat, 0.50),
        "join_ms_p99": percentile(&lat, 0.99),
        "join_ms_max": percentile(&lat, 1.0),
        "history_reads_per_sec": read_rate,
        "read_errors": read_errors.load(Relaxed),
        "server_cpu_s": cpu,
        // For the smoke check's shape: this scenario delivers joins, never gaps or dups.
        "delivered": lat.len(),
        "gaps": 0,
        "duplicates": 0,
        "connect_failed": 0,
    });
    println!("{out}");
    eprintln!(
        "read-flood: {} HTTP readers at {read_rate:.0} pages/s; {} joins, p50 {:.2} ms, p99 {:.2} ms",
        args.clients,
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
    );
    Ok(())
}
