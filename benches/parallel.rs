//! Parallel execution benchmark: a CPU-bound batch (FNV-1a over 4 MB in
//! 64 KiB chunks) hashed inside one task, sequentially and on the
//! orchestrator's shared pool, in one group so the speedup comes from one
//! run. The target on the 2-core machine: at least 1.8x.
//!
//! Run: `cargo bench --bench parallel`

use std::sync::Arc;
use std::time::Duration;

use agentry::{AgentContext, Orchestrator, Output, Role, Task, TaskError};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const CHUNK: usize = 64 * 1024;
const CHUNKS: usize = 64;
const PATIENCE: Duration = Duration::from_secs(30);

/// Byte at a time on purpose: compute-bound, so the figure measures the
/// pool and not the memory bus.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn hashing(c: &mut Criterion) {
    let data: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..CHUNKS)
            .map(|i| (0..CHUNK).map(|j| (i * 31 + j) as u8).collect())
            .collect(),
    );
    let chunks = Arc::clone(&data);
    let orchestrator = Orchestrator::builder()
        .parallelism(2)
        .agents(Role::Extractor, 1, move || {
            let chunks = Arc::clone(&chunks);
            move |task: &Task, ctx: &AgentContext| -> Result<Output, TaskError> {
                let hashes: Vec<u64> = if task.kind() == "parallel" {
                    ctx.parallel().map(&chunks, |chunk| fnv1a(chunk))?
                } else {
                    chunks.iter().map(|chunk| fnv1a(chunk)).collect()
                };
                Ok(Output::encode(&hashes)?)
            }
        })
        .build()
        .unwrap();
    let run = |kind: &str| {
        let id = orchestrator.submit(Task::new(kind)).unwrap();
        let result = orchestrator.wait(id, PATIENCE).unwrap();
        assert!(result.is_success(), "{:?}", result.error());
    };

    let mut group = c.benchmark_group("parallel/fnv1a_4mb");
    group.throughput(Throughput::Bytes((CHUNK * CHUNKS) as u64));
    group.sample_size(20);
    group.bench_function("sequential", |b| b.iter(|| run("sequential")));
    group.bench_function("parallel_pool", |b| b.iter(|| run("parallel")));
    group.finish();
}

criterion_group!(benches, hashing);
criterion_main!(benches);
