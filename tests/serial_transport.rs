//! `SerialTransport` over a pseudo-terminal: the slave end stands in for a
//! board's serial port, the master end for the board.
#![cfg(unix)]

use std::ffi::CStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uota::transport::serial::SerialTransport;
use uota::transport::Transport;
use uota::ErrorKind;

/// Generous bound for things that should take milliseconds; no timing is asserted.
const PATIENCE: Duration = Duration::from_secs(10);

/// A pseudo-terminal pair. The slave fd stays open so the master never sees
/// a hang-up between the transport's opens.
struct Pty {
    master: File,
    slave: OwnedFd,
    path: String,
}

fn pty() -> Pty {
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: out-pointers to two ints; null name, termios and winsize are allowed.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: openpty returned two fresh descriptors that we now own.
    let (master, slave) = unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut name = [0 as libc::c_char; 256];
    // SAFETY: the buffer is valid for its length.
    let rc = unsafe { libc::ttyname_r(slave.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    assert_eq!(rc, 0, "ttyname_r failed");
    // SAFETY: ttyname_r wrote a NUL-terminated string.
    let path = unsafe { CStr::from_ptr(name.as_ptr()) }
        .to_str()
        .unwrap()
        .to_owned();
    Pty {
        master,
        slave,
        path,
    }
}

async fn open(path: &str) -> SerialTransport {
    SerialTransport::open(path, 115_200, PATIENCE)
        .await
        .unwrap_or_else(|e| panic!("open {path}: {e}"))
}

/// Read exactly `n` bytes from the master end, off the runtime.
async fn master_read(master: &File, n: usize) -> Vec<u8> {
    let mut master = master.try_clone().unwrap();
    let read = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0; n];
        master.read_exact(&mut buf).map(|_| buf)
    });
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the master end got the bytes in time")
        .unwrap()
        .unwrap()
}

fn all_byte_values() -> Vec<u8> {
    (0..=255u8).collect()
}

#[tokio::test]
async fn every_byte_value_passes_both_ways_unchanged() {
    let mut pty = pty();
    let mut port = open(&pty.path).await;
    assert_eq!(port.peer(), pty.path);
    assert_eq!(port.path(), pty.path);
    assert_eq!(port.baud(), 115_200);

    // Host to board: no CR/LF mapping, no stripping, nothing eaten.
    let bytes = all_byte_values();
    port.write_all(&bytes).await.unwrap();
    port.flush().await.unwrap();
    assert_eq!(master_read(&pty.master, bytes.len()).await, bytes);

    // Board to host: XON/XOFF, Ctrl-C, Ctrl-D, CR and DEL arrive as data.
    let twice: Vec<u8> = bytes.iter().chain(bytes.iter().rev()).copied().collect();
    pty.master.write_all(&twice).unwrap();
    let mut got = vec![0; twice.len()];
    tokio::time::timeout(PATIENCE, port.read_exact(&mut got))
        .await
        .expect("the transport got the bytes in time")
        .unwrap();
    assert_eq!(got, twice);
}

#[tokio::test]
async fn the_port_is_in_raw_8n1_mode() {
    let pty = pty();
    let _port = open(&pty.path).await;
    // SAFETY: tcgetattr fills the struct on success.
    let t = unsafe {
        let mut t = std::mem::zeroed::<libc::termios>();
        assert_eq!(libc::tcgetattr(pty.slave.as_raw_fd(), &mut t), 0);
        t
    };
    for (flag, name) in [
        (libc::ICRNL, "ICRNL"),
        (libc::INLCR, "INLCR"),
        (libc::IGNCR, "IGNCR"),
        (libc::ISTRIP, "ISTRIP"),
        (libc::IXON, "IXON"),
        (libc::IXOFF, "IXOFF"),
        (libc::BRKINT, "BRKINT"),
        (libc::INPCK, "INPCK"),
    ] {
        assert_eq!(t.c_iflag & flag, 0, "{name} is set");
    }
    assert_eq!(t.c_oflag & libc::OPOST, 0, "OPOST is set");
    for (flag, name) in [
        (libc::ECHO, "ECHO"),
        (libc::ICANON, "ICANON"),
        (libc::ISIG, "ISIG"),
        (libc::IEXTEN, "IEXTEN"),
    ] {
        assert_eq!(t.c_lflag & flag, 0, "{name} is set");
    }
    assert_eq!(t.c_cflag & libc::CSIZE, libc::CS8, "not 8 data bits");
    assert_eq!(t.c_cflag & libc::PARENB, 0, "parity is on");
    assert_eq!(t.c_cflag & libc::CSTOPB, 0, "two stop bits");
    assert_eq!(t.c_cflag & libc::CRTSCTS, 0, "RTS/CTS flow control is on");
    assert_ne!(t.c_cflag & libc::CREAD, 0, "the receiver is off");
}

#[tokio::test]
async fn a_waiting_read_wakes_when_one_byte_arrives() {
    let mut pty = pty();
    let mut port = open(&pty.path).await;
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 64];
        let n = port.read(&mut buf).await.unwrap();
        buf[..n].to_vec()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !reader.is_finished(),
        "a read returned with nothing to read"
    );
    pty.master.write_all(b"\x06").unwrap();
    // One byte, no newline, no more data: the read must still complete.
    let got = tokio::time::timeout(PATIENCE, reader)
        .await
        .expect("the read woke up")
        .unwrap();
    assert_eq!(got, b"\x06");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transfer_round_trips_with_backpressure() {
    const LEN: usize = 1 << 20;
    let pty = pty();
    let port = open(&pty.path).await;
    // The board echoes everything back; its buffers are far smaller than 1 MiB,
    // so writes must wait for room rather than fail or drop bytes.
    let mut echo_in = pty.master.try_clone().unwrap();
    let mut echo_out = pty.master.try_clone().unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut left = LEN;
        while left > 0 {
            let n = echo_in.read(&mut buf).unwrap();
            echo_out.write_all(&buf[..n]).unwrap();
            left -= n;
        }
    });
    let data: Vec<u8> = (0..LEN).map(|i| (i * 7 + i / 251) as u8).collect();
    let (mut rx, mut tx) = tokio::io::split(port);
    let sent = data.clone();
    let writer = tokio::spawn(async move { tx.write_all(&sent).await });
    let mut got = vec![0; LEN];
    tokio::time::timeout(Duration::from_secs(60), rx.read_exact(&mut got))
        .await
        .expect("1 MiB came back in time")
        .unwrap();
    writer.await.unwrap().unwrap();
    echo.join().unwrap();
    assert!(got == data, "the echoed data differs");
}

#[tokio::test]
async fn a_missing_port_is_a_clear_error_naming_it() {
    let path = "/dev/uota-test-no-such-port";
    let err = SerialTransport::open(path, 115_200, PATIENCE)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport);
    let msg = err.to_string();
    assert!(msg.contains(path), "{msg}");
    assert!(msg.contains("cannot open serial port"), "{msg}");
    assert!(msg.contains("No such file"), "{msg}");
}

#[tokio::test]
async fn a_port_in_use_is_refused_and_free_again_after_close() {
    let pty = pty();
    let first = open(&pty.path).await;
    let err = SerialTransport::open(&pty.path, 115_200, PATIENCE)
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&pty.path), "{msg}");
    assert!(msg.contains("another program"), "{msg}");
    drop(first);
    let _again = open(&pty.path).await;
}

#[tokio::test]
async fn baud_zero_is_refused() {
    let pty = pty();
    let err = SerialTransport::open(&pty.path, 0, PATIENCE)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
}
