//! WebSocket framing as it arrives off a real socket: frames split at every byte, several
//! frames in one segment, fragmented messages, and messages larger than one read. This is
//! what the read path of the vendored tungstenite (buffers allocated only when data
//! arrives; see vendor/README.md) must reassemble exactly. The client side is written by
//! hand, byte by byte, so nothing on the client buffers or re-frames for us.

mod common;

use common::{WAIT, spawn_app};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const TEXT: u8 = 0x1;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;

/// Opens a TCP connection and performs the WebSocket upgrade by hand.
async fn upgrade(addr: std::net::SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tcp.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
    tcp
}

/// A client frame: masked, as RFC 6455 requires of clients.
fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn text(value: &Value) -> Vec<u8> {
    frame(TEXT, true, value.to_string().as_bytes())
}

/// Reads one server frame (servers never mask): its opcode and payload.
async fn read_frame(tcp: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 2];
    tokio::time::timeout(WAIT, tcp.read_exact(&mut head)).await.expect("a frame in time").unwrap();
    assert_eq!(head[1] & 0x80, 0, "server frames are not masked");
    let len = match head[1] & 0x7f {
        126 => tcp.read_u16().await.unwrap() as usize,
        127 => tcp.read_u64().await.unwrap() as usize,
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await.unwrap();
    (head[0] & 0x0f, payload)
}

/// The next JSON text message, skipping pings and events we are not looking at.
async fn read_json(tcp: &mut TcpStream, wanted: &str) -> Value {
    loop {
        let (opcode, payload) = read_frame(tcp).await;
        assert_ne!(opcode, CLOSE, "closed while waiting for {wanted}: {payload:?}");
        if opcode != TEXT {
            continue;
        }
        let value: Value = serde_json::from_slice(&payload).unwrap();
        if value["type"] == wanted {
            return value;
        }
    }
}

/// Writes `bytes` in pieces of `chunk` bytes, letting each piece reach the server alone.
async fn trickle(tcp: &mut TcpStream, bytes: &[u8], chunk: usize) {
    for piece in bytes.chunks(chunk) {
        tcp.write_all(piece).await.unwrap();
        tcp.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn a_frame_sent_one_byte_at_a_time_is_reassembled() {
    let app = spawn_app().await;
    let mut tcp = upgrade(app.addr).await;
    trickle(&mut tcp, &text(&json!({"type": "hello", "nick": "trickle"})), 1).await;
    let welcome = read_json(&mut tcp, "welcome").await;
    assert_eq!(welcome["nick"], "trickle");
}

#[tokio::test]
async fn several_frames_in_one_write_are_all_handled_in_order() {
    let app = spawn_app().await;
    let mut tcp = upgrade(app.addr).await;
    let mut burst = text(&json!({"type": "hello", "nick": "burst"}));
    burst.extend(text(&json!({"type": "join", "room": "lobby"})));
    for i in 0..5 {
        burst.extend(text(
            &json!({"type": "send", "room": "lobby", "text": format!("m{i}"), "client_id": format!("c{i}")}),
        ));
    }
    tcp.write_all(&burst).await.unwrap();
    read_json(&mut tcp, "welcome").await;
    read_json(&mut tcp, "joined").await;
    for i in 0..5 {
        let msg = read_json(&mut tcp, "message").await;
        assert_eq!(msg["text"], format!("m{i}"));
        assert_eq!(msg["seq"], i + 1);
    }
}

#[tokio::test]
async fn a_fragmented_message_split_across_writes_is_one_message() {
    let app = spawn_app().await;
    let mut tcp = upgrade(app.addr).await;
    tcp.write_all(&text(&json!({"type": "hello", "nick": "frag"}))).await.unwrap();
    tcp.write_all(&text(&json!({"type": "join", "room": "lobby"}))).await.unwrap();
    read_json(&mut tcp, "joined").await;

    let whole =
        json!({"type": "send", "room": "lobby", "text": "in three parts", "client_id": "f1"}).to_string();
    let (a, rest) = whole.as_bytes().split_at(10);
    let (b, c) = rest.split_at(15);
    let mut bytes = frame(TEXT, false, a);
    bytes.extend(frame(CONTINUATION, false, b));
    bytes.extend(frame(CONTINUATION, true, c));
    trickle(&mut tcp, &bytes, 7).await;
    let msg = read_json(&mut tcp, "message").await;
    assert_eq!(msg["text"], "in three parts");
}

#[tokio::test]
async fn a_message_larger_than_one_read_arrives_whole() {
    let app = spawn_app().await;
    let limit = app.hub.config.text_limit();
    let mut tcp = upgrade(app.addr).await;
    tcp.write_all(&text(&json!({"type": "hello", "nick": "large"}))).await.unwrap();
    tcp.write_all(&text(&json!({"type": "join", "room": "lobby"}))).await.unwrap();
    read_json(&mut tcp, "joined").await;

    // Multi-byte characters at the limit: several times the server's read size, split at
    // boundaries that fall inside characters and inside the frame header.
    let body: String = "é".repeat(limit);
    let bytes = text(&json!({"type": "send", "room": "lobby", "text": body, "client_id": "big"}));
    assert!(bytes.len() > 4 * 1024, "larger than one read");
    tcp.write_all(&bytes[..3]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    trickle(&mut tcp, &bytes[3..], 1021).await;
    let msg = read_json(&mut tcp, "message").await;
    assert_eq!(msg["text"].as_str().unwrap().chars().count(), limit);

    // And the connection reads normally afterwards, from an empty buffer again.
    trickle(&mut tcp, &text(&json!({"type": "send", "room": "lobby", "text": "after", "client_id": "a"})), 2)
        .await;
    assert_eq!(read_json(&mut tcp, "message").await["text"], "after");
}
