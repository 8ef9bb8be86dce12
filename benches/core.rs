//! Micro-benchmarks of the crate's core, run with `cargo bench --bench core`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use uota::auth::SigningKey;
use uota::manifest::Manifest;

const FILES: usize = 10_000;
const FILE_SIZE: usize = 1024;

/// Write `FILES` files of about 1 KiB into `root`, spread over nested folders.
fn make_tree(root: &Path) {
    for i in 0..FILES {
        let dir = root.join(format!("app/pkg{:02}/sub{:02}", i % 20, (i / 20) % 25));
        if i < 500 {
            std::fs::create_dir_all(&dir).expect("create bench folder");
        }
        let line = format!("# file {i}\nprint('hello from {i}')\n");
        let body = line.repeat(FILE_SIZE / line.len() + 1);
        std::fs::write(
            dir.join(format!("mod{i}.py")),
            &body.as_bytes()[..FILE_SIZE],
        )
        .expect("write bench file");
    }
}

fn manifest_benches(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    make_tree(tmp.path());
    let include = vec!["**".to_string()];
    let exclude = vec![
        ".git/**".to_string(),
        "*.zip".to_string(),
        "dist/**".to_string(),
    ];
    let manifest = Manifest::build(tmp.path(), &include, &exclude, "1.0.0").expect("build");
    assert_eq!(manifest.files.len(), FILES);
    let key = SigningKey::new("bench-signing-key");

    let mut group = c.benchmark_group("manifest");
    group.throughput(Throughput::Elements(FILES as u64));
    group.sample_size(10);
    group.bench_function("manifest_build_10k", |b| {
        b.iter(|| Manifest::build(tmp.path(), &include, &exclude, "1.0.0").expect("build"))
    });
    group.sample_size(50);
    group.bench_function("signing_payload_10k", |b| {
        b.iter(|| manifest.signing_payload())
    });
    group.bench_function("sign_10k", |b| {
        b.iter_batched_ref(|| manifest.clone(), |m| m.sign(&key), BatchSize::LargeInput)
    });
    group.finish();
}

/// Frame encoding and decoding of a 2 MB push's worth of 8 KiB DATA frames.
fn codec_benches(c: &mut Criterion) {
    use uota::protocol::frame::{self, FrameDecoder, FrameType};
    use uota::protocol::{Event, Mode, StreamDecoder};

    let chunk = vec![0x5au8; 8192];
    let frames = 256; // 2 MiB
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Bytes((chunk.len() * frames) as u64));
    group.bench_function("encode_2mib_8k_frames", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity((chunk.len() + 5) * frames);
            for _ in 0..frames {
                frame::encode(FrameType::Data, &chunk, &mut out);
            }
            out
        })
    });
    let mut wire = Vec::new();
    for _ in 0..frames {
        frame::encode(FrameType::Data, &chunk, &mut wire);
    }
    group.bench_function("decode_2mib_8k_frames_fed_in_16k_reads", |b| {
        b.iter(|| {
            let mut conn = StreamDecoder::new();
            conn.set_mode(Mode::Frames);
            let mut n = 0;
            for piece in wire.chunks(16 * 1024) {
                conn.feed(piece);
                while let Some(Event::Frame(f)) = conn.poll_event().unwrap() {
                    n += f.payload.len();
                }
            }
            assert_eq!(n, chunk.len() * frames);
        })
    });
    group.bench_function("decode_whole_buffer_at_once", |b| {
        b.iter(|| {
            let mut dec = FrameDecoder::new(frame::DEFAULT_MAX_FRAME);
            let (mut pos, mut n) = (0, 0);
            while let Some((f, used)) = dec.decode_slice(&wire[pos..]).unwrap() {
                n += f.payload.len();
                pos += used;
            }
            n
        })
    });
    group.finish();
}

criterion_group!(benches, manifest_benches, codec_benches);
criterion_main!(benches);
