//! Micro-benchmarks of the per-message hot paths: encoding a frame once, fanning it out to
//! N subscribers, and appending to the store (group commit, synchronous = FULL).
//!
//!   cargo bench --features ssr --bench hot_paths
//!
//! `cargo test --features ssr --benches` runs each once as a smoke test (CI does).

use confab::protocol::{ChatMessage, Nick, RoomEvent, RoomName, ServerMsg};
use confab::server::{
    metrics::Metrics,
    outbound::{ConnHandle, Outbound},
    room::{Room, encode},
    store::sqlite::SqliteStore,
};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::{hint::black_box, sync::Arc};

fn message(seq: u64) -> ChatMessage {
    ChatMessage {
        room: "bench".into(),
        seq,
        nick: "someone".into(),
        text: "LG:1:2:1700000000000000000;xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx".into(),
        ts: 1_700_000_000_000,
        client_id: format!("c-{seq}"),
        user: "g-0123456789abcdef".into(),
        guest: true,
        ..ChatMessage::default()
    }
}

fn encode_message(c: &mut Criterion) {
    let msg = ServerMsg::Message(message(1));
    c.bench_function("encode message frame", |b| b.iter(|| encode(black_box(&msg))));
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("fan-out");
    for members in [10usize, 100, 1000] {
        let room = Room::new(RoomName::parse("bench").unwrap(), 0, 0, Arc::new(Metrics::default()));
        let mut receivers = Vec::new();
        for i in 0..members {
            let conn = ConnHandle::new(i as u64, usize::MAX / 2);
            room.subscribe(&Nick::parse(&format!("m{i}")).unwrap(), &conn);
            receivers.push(conn);
        }
        // Presence frames from the subscriptions.
        for conn in &receivers {
            conn.try_take();
        }
        group.throughput(Throughput::Elements(members as u64));
        let mut seq = 0;
        group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            b.iter(|| {
                seq += 1;
                room.deliver(message(seq));
                // What each writer does next: take the frame off its queue.
                for conn in &receivers {
                    if let Some(items) = conn.try_take() {
                        conn.release(items.iter().map(Outbound::bytes).sum());
                    }
                }
            })
        });
    }
    group.finish();
}

fn store_append(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("bench.db"), true).unwrap();
    let mut group = c.benchmark_group("store append (one transaction, fsync)");
    group.sample_size(20);
    // One store for every batch size: seqs keep counting up across them.
    let mut next = 0u64;
    for batch in [1usize, 100, 1000] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::from_parameter(batch), &batch, |b, &batch| {
            b.iter_batched(
                || {
                    let events: Vec<RoomEvent> =
                        (0..batch).map(|i| RoomEvent::Message(message(next + i as u64 + 1))).collect();
                    next += batch as u64;
                    events
                },
                |mut events| store.append(&mut events).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, encode_message, fan_out, store_append);
criterion_main!(benches);
