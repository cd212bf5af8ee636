//! `flotilla-bench fuzz`: a small mutational fuzzer, on stable Rust (no libFuzzer), for the
//! decoders that read bytes from the far side of a trust boundary: the signer's request
//! decoder, the host's decoder of signer answers, and the host's parser of the chain node's RPC
//! replies. They must refuse bad input with an error; any panic is a bug.
//!
//! Each target starts from valid encodings, so mutations reach past the first checks, and
//! inputs that still decode join the thread's corpus. Every thread draws from its own
//! generator seeded from `--seed` and its index: a run repeats with the same seed, threads and
//! input count.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bitcoin::hex::DisplayHex;
use clap::{Args, ValueEnum};
use prost::Message as _;
use serde::Serialize;

use super::measure::round3;
use super::BenchResult;

mod seeds;

#[derive(Args)]
pub struct FuzzArgs {
    /// Write the report (inputs, panics, decoded and refused inputs per target) to this file.
    #[arg(long)]
    json: PathBuf,
    /// Inputs run per target.
    #[arg(long, default_value_t = 10_000_000)]
    inputs: u64,
    /// Seed of the threads' random numbers (default: from the clock); the report shows it.
    #[arg(long)]
    seed: Option<u64>,
    /// Threads per target (default: the available cores); part of what makes a run repeat.
    #[arg(long)]
    threads: Option<usize>,
    /// A target to run (repeatable; default: all).
    #[arg(long = "target", value_enum)]
    targets: Vec<TargetName>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TargetName {
    /// Bytes a signer receives from the hub: `HubMessage`, then its request.
    #[value(name = "signer_request_decoder")]
    SignerRequestDecoder,
    /// Bytes the hub receives from a signer: `SignerMessage`, then its answer or handover.
    #[value(name = "signer_response_decoder")]
    SignerResponseDecoder,
    /// Bytes the host receives from the chain node: HTTP, then the JSON-RPC reply.
    #[value(name = "chain_rpc_response")]
    ChainRpcResponse,
}

const ALL_TARGETS: [TargetName; 3] = [
    TargetName::SignerRequestDecoder,
    TargetName::SignerResponseDecoder,
    TargetName::ChainRpcResponse,
];

#[derive(Serialize)]
struct Report {
    seed: u64,
    threads: usize,
    inputs_per_target: u64,
    targets: Vec<TargetReport>,
}

/// One target's run.
#[derive(Debug, Serialize)]
pub(crate) struct TargetReport {
    name: String,
    inputs: u64,
    panics: u64,
    /// Inputs that decoded to a value (or to a well-formed error answer).
    ok: u64,
    /// Inputs refused with an error.
    errors: u64,
    seconds: f64,
    inputs_per_second: f64,
    /// The first few panicking inputs, to replay.
    panic_samples: Vec<PanicSample>,
}

#[derive(Clone, Debug, Serialize)]
struct PanicSample {
    input_hex: String,
    message: String,
}

pub async fn run(args: FuzzArgs) -> BenchResult {
    let threads = match args.threads {
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    if threads == 0 || args.inputs == 0 {
        return Err("--threads and --inputs must be above zero".into());
    }
    let seed = args.seed.unwrap_or_else(clock_seed);
    let names = if args.targets.is_empty() {
        ALL_TARGETS.to_vec()
    } else {
        args.targets.clone()
    };
    eprintln!(
        "fuzz: seed {seed}, {threads} threads, {} inputs per target",
        args.inputs
    );
    let mut targets = Vec::new();
    for name in names {
        let report = fuzz(&target(name), args.inputs, seed, threads);
        eprintln!("fuzz: {}", summary(&report));
        targets.push(report);
    }
    let report = Report {
        seed,
        threads,
        inputs_per_target: args.inputs,
        targets,
    };
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    std::fs::write(&args.json, text + "\n")?;
    let panicked: Vec<&str> = report
        .targets
        .iter()
        .filter(|t| t.panics > 0)
        .map(|t| t.name.as_str())
        .collect();
    if !panicked.is_empty() {
        return Err(format!(
            "panics in {} (inputs in {})",
            panicked.join(", "),
            args.json.display()
        )
        .into());
    }
    Ok(())
}

fn clock_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn summary(r: &TargetReport) -> String {
    format!(
        "{}: {} inputs, {} panics, {} ok, {} refused, {:.1} s ({:.0}/s)",
        r.name, r.inputs, r.panics, r.ok, r.errors, r.seconds, r.inputs_per_second
    )
}

// ---- The harness ----

/// What a target made of one input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A value, or a well-formed error answer: the input went all the way through.
    Decoded,
    /// Refused with an error.
    Refused,
}

/// Code under test, its valid inputs, and byte strings worth inserting (text protocols).
pub(crate) struct Target<'a> {
    pub name: &'a str,
    pub seeds: Vec<Vec<u8>>,
    pub tokens: &'a [&'a [u8]],
    pub run: &'a (dyn Fn(&[u8]) -> Outcome + Sync),
}

/// Panicking inputs kept per target.
const SAMPLES: usize = 5;

/// Runs `inputs` inputs through `target` on `threads` threads.
pub(crate) fn fuzz(target: &Target, inputs: u64, seed: u64, threads: usize) -> TargetReport {
    let started = Instant::now();
    let quiet = QuietPanics::install();
    let tallies: Vec<Tally> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let share =
                    inputs / threads as u64 + u64::from((t as u64) < inputs % threads as u64);
                scope.spawn(move || worker(target, share, t, thread_seed(seed, t)))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Tally::harness_failure()))
            .collect()
    });
    drop(quiet);
    let seconds = started.elapsed().as_secs_f64();
    let mut total = Tally::default();
    for tally in tallies {
        total.add(tally);
    }
    TargetReport {
        name: target.name.to_string(),
        inputs: total.inputs,
        panics: total.panics,
        ok: total.ok,
        errors: total.errors,
        seconds: round3(seconds),
        inputs_per_second: round3(total.inputs as f64 / seconds.max(1e-9)),
        panic_samples: total.samples,
    }
}

fn thread_seed(seed: u64, thread: usize) -> u64 {
    Rng(seed ^ Rng(thread as u64).next()).next()
}

#[derive(Default)]
struct Tally {
    inputs: u64,
    panics: u64,
    ok: u64,
    errors: u64,
    samples: Vec<PanicSample>,
}

impl Tally {
    /// A worker that died outside the target: a fuzzer bug, reported rather than hidden.
    fn harness_failure() -> Tally {
        Tally {
            panics: 1,
            samples: vec![PanicSample {
                input_hex: String::new(),
                message: "a fuzzer thread panicked outside the target".into(),
            }],
            ..Tally::default()
        }
    }

    fn add(&mut self, other: Tally) {
        self.inputs += other.inputs;
        self.panics += other.panics;
        self.ok += other.ok;
        self.errors += other.errors;
        let room = SAMPLES.saturating_sub(self.samples.len());
        self.samples.extend(other.samples.into_iter().take(room));
    }

    fn count(&mut self, input: &[u8], result: Result<Outcome, String>) {
        self.inputs += 1;
        match result {
            Ok(Outcome::Decoded) => self.ok += 1,
            Ok(Outcome::Refused) => self.errors += 1,
            Err(message) => {
                self.panics += 1;
                if self.samples.len() < SAMPLES {
                    self.samples.push(PanicSample {
                        input_hex: input.to_lower_hex_string(),
                        message,
                    });
                }
            }
        }
    }
}

/// One thread's share: thread 0 runs the seeds as they are first, then every input is a
/// mutation of a corpus entry.
fn worker(target: &Target, inputs: u64, thread: usize, seed: u64) -> Tally {
    let mut rng = Rng(seed);
    let mut corpus = Corpus::new(&target.seeds);
    let mut tally = Tally::default();
    let mut input = Vec::new();
    for i in 0..inputs {
        input.clear();
        match target.seeds.get(i as usize).filter(|_| thread == 0) {
            Some(seed) => input.extend_from_slice(seed),
            None => corpus.mutant(&mut input, target.tokens, &mut rng),
        }
        let result = run_one(target.run, &input);
        if result == Ok(Outcome::Decoded) {
            corpus.keep(&input, &mut rng);
        }
        tally.count(&input, result);
    }
    tally
}

thread_local! {
    /// Set while this thread runs a target: its panics are counted, not printed.
    static IN_TARGET: Cell<bool> = const { Cell::new(false) };
    /// The message of this thread's last panic in a target.
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// `Err(panic message)` if the target panicked on `input`.
fn run_one(run: &(dyn Fn(&[u8]) -> Outcome + Sync), input: &[u8]) -> Result<Outcome, String> {
    IN_TARGET.set(true);
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| run(input)));
    IN_TARGET.set(false);
    result.map_err(|_| LAST_PANIC.take())
}

type PanicHook = Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>;

/// The panic hook during a run: panics in a target are recorded silently (millions would
/// flood stderr), any other panic goes to the previous hook, which comes back afterwards.
/// Runs take turns (tests run in parallel), so each restores the hook it found.
struct QuietPanics {
    previous: Option<Arc<PanicHook>>,
    _turn: MutexGuard<'static, ()>,
}

impl QuietPanics {
    fn install() -> QuietPanics {
        static TURN: Mutex<()> = Mutex::new(());
        let turn = TURN.lock().unwrap_or_else(|p| p.into_inner());
        let previous = Arc::new(std::panic::take_hook());
        let outer = previous.clone();
        std::panic::set_hook(Box::new(move |info| {
            if IN_TARGET.get() {
                LAST_PANIC.set(describe(info));
            } else {
                outer(info);
            }
        }));
        QuietPanics {
            previous: Some(previous),
            _turn: turn,
        }
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        // Changing the hook while panicking aborts; ours forwards to the previous one anyway.
        let Some(previous) = self.previous.take() else {
            return;
        };
        if std::thread::panicking() {
            return;
        }
        drop(std::panic::take_hook());
        match Arc::try_unwrap(previous) {
            Ok(hook) => std::panic::set_hook(hook),
            Err(shared) => std::panic::set_hook(Box::new(move |info| shared(info))),
        }
    }
}

fn describe(info: &PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(non-text panic payload)");
    match info.location() {
        Some(at) => format!("{text} at {}:{}:{}", at.file(), at.line(), at.column()),
        None => text.to_string(),
    }
}

// ---- Mutation ----

/// SplitMix64: tiny, fast, and the same numbers on every platform.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `0..n` (0 when `n` is 0).
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// Inputs that decoded, kept besides the seeds.
const GROWN: usize = 256;
/// Shortest length cap: inputs may grow to twice the longest seed, or to this.
const MIN_MAX_LEN: usize = 4096;

/// A thread's inputs to mutate: the seeds, always kept, and inputs that decoded.
struct Corpus {
    entries: Vec<Vec<u8>>,
    seeds: usize,
    max_len: usize,
}

impl Corpus {
    fn new(seeds: &[Vec<u8>]) -> Corpus {
        let mut entries = seeds.to_vec();
        if entries.is_empty() {
            entries.push(Vec::new());
        }
        let longest = entries.iter().map(Vec::len).max().unwrap_or(0);
        Corpus {
            seeds: entries.len(),
            entries,
            max_len: (2 * longest).max(MIN_MAX_LEN),
        }
    }

    /// A seed or a grown entry, even odds while there are grown ones.
    fn pick(&self, rng: &mut Rng) -> &[u8] {
        let grown = self.entries.len() - self.seeds;
        let i = if grown > 0 && rng.one_in(2) {
            self.seeds + rng.below(grown)
        } else {
            rng.below(self.seeds)
        };
        &self.entries[i]
    }

    /// Writes into `input` an entry changed by 1, 2 or 4 stacked mutations.
    fn mutant(&self, input: &mut Vec<u8>, tokens: &[&[u8]], rng: &mut Rng) {
        input.extend_from_slice(self.pick(rng));
        for _ in 0..1 << rng.below(3) {
            mutate(input, self, tokens, rng);
        }
        input.truncate(self.max_len);
    }

    /// Keeps one in four decoded inputs, replacing a grown entry once full.
    fn keep(&mut self, input: &[u8], rng: &mut Rng) {
        if !rng.one_in(4) {
            return;
        }
        if self.entries.len() < self.seeds + GROWN {
            self.entries.push(input.to_vec());
        } else {
            let slot = &mut self.entries[self.seeds + rng.below(GROWN)];
            slot.clear();
            slot.extend_from_slice(input);
        }
    }
}

const INTERESTING_BYTES: [u8; 5] = [0x00, 0x01, 0x7f, 0x80, 0xff];
const INTERESTING_VARINTS: [u64; 10] = [
    0,
    1,
    0x7f,
    0x80,
    0x3fff,
    0x4000,
    1 << 31,
    u32::MAX as u64,
    1 << 63,
    u64::MAX,
];

fn mutate(input: &mut Vec<u8>, corpus: &Corpus, tokens: &[&[u8]], rng: &mut Rng) {
    match rng.below(12) {
        0 => flip_bit(input, rng),
        1 => {
            let value = INTERESTING_BYTES[rng.below(INTERESTING_BYTES.len())];
            set_byte(input, value, rng)
        }
        2 => {
            let value = rng.byte();
            set_byte(input, value, rng)
        }
        3 => nudge_byte(input, rng),
        4 => insert_run(input, rng),
        5 => delete_run(input, rng),
        6 => duplicate_slice(input, rng),
        7 => splice(input, corpus.pick(rng), rng),
        8 => input.truncate(rng.below(input.len() + 1)),
        9 => proto_field(input, rng),
        10 => {
            let mut varint = Vec::new();
            put_varint(&mut varint, interesting_varint(rng));
            insert(input, &varint, rng)
        }
        _ => match tokens.len() {
            0 => insert_run(input, rng),
            n => token(input, tokens[rng.below(n)], rng),
        },
    }
}

fn flip_bit(input: &mut [u8], rng: &mut Rng) {
    if !input.is_empty() {
        let i = rng.below(input.len());
        input[i] ^= 1 << rng.below(8);
    }
}

/// Sets a byte, or appends it to an empty input.
fn set_byte(input: &mut Vec<u8>, value: u8, rng: &mut Rng) {
    match input.len() {
        0 => input.push(value),
        n => input[rng.below(n)] = value,
    }
}

/// Adds or subtracts a little: lengths and counts one off either way.
fn nudge_byte(input: &mut [u8], rng: &mut Rng) {
    if !input.is_empty() {
        let i = rng.below(input.len());
        let delta = 1 + rng.below(16) as u8;
        input[i] = if rng.one_in(2) {
            input[i].wrapping_add(delta)
        } else {
            input[i].wrapping_sub(delta)
        };
    }
}

/// Inserts `bytes` at a random place.
fn insert(input: &mut Vec<u8>, bytes: &[u8], rng: &mut Rng) {
    let at = rng.below(input.len() + 1);
    input.splice(at..at, bytes.iter().copied());
}

/// Random bytes, or one byte repeated.
fn insert_run(input: &mut Vec<u8>, rng: &mut Rng) {
    let n = 1 + rng.below(16);
    let run: Vec<u8> = if rng.one_in(2) {
        (0..n).map(|_| rng.byte()).collect()
    } else {
        vec![rng.byte(); n]
    };
    insert(input, &run, rng);
}

fn delete_run(input: &mut Vec<u8>, rng: &mut Rng) {
    if !input.is_empty() {
        let at = rng.below(input.len());
        let n = 1 + rng.below((input.len() - at).min(16));
        input.drain(at..at + n);
    }
}

fn duplicate_slice(input: &mut Vec<u8>, rng: &mut Rng) {
    if !input.is_empty() {
        let from = rng.below(input.len());
        let n = 1 + rng.below((input.len() - from).min(64));
        let slice = input[from..from + n].to_vec();
        insert(input, &slice, rng);
    }
}

/// The head of `input` and the tail of `other`.
fn splice(input: &mut Vec<u8>, other: &[u8], rng: &mut Rng) {
    let cut = rng.below(input.len() + 1);
    let from = rng.below(other.len() + 1);
    input.truncate(cut);
    input.extend_from_slice(&other[from..]);
}

/// A protobuf field with a random tag and a value of its wire type (or of another): at the
/// end, where it belongs to the outer message, or anywhere.
fn proto_field(input: &mut Vec<u8>, rng: &mut Rng) {
    let number = if rng.one_in(4) {
        rng.next() % (1 << 29)
    } else {
        1 + rng.below(24) as u64
    };
    let wire_type = [0, 0, 2, 2, 1, 5, 3, 4, 6, 7][rng.below(10)];
    let mut field = Vec::new();
    put_varint(&mut field, number << 3 | wire_type);
    match wire_type {
        0 => put_varint(&mut field, interesting_varint(rng)),
        1 => field.extend((0..8).map(|_| rng.byte())),
        5 => field.extend((0..4).map(|_| rng.byte())),
        2 => {
            let n = rng.below(48);
            // Mostly the true length; sometimes one that lies.
            let claimed = if rng.one_in(8) {
                interesting_varint(rng)
            } else {
                n as u64
            };
            put_varint(&mut field, claimed);
            field.extend((0..n).map(|_| rng.byte()));
        }
        _ => {}
    }
    if rng.one_in(2) {
        input.extend_from_slice(&field);
    } else {
        insert(input, &field, rng);
    }
}

fn interesting_varint(rng: &mut Rng) -> u64 {
    match rng.below(INTERESTING_VARINTS.len() + 1) {
        i if i < INTERESTING_VARINTS.len() => INTERESTING_VARINTS[i],
        _ => rng.next() >> rng.below(64),
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push(value as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Inserts `token`, or writes it over the bytes at a random place.
fn token(input: &mut Vec<u8>, token: &[u8], rng: &mut Rng) {
    if rng.one_in(2) || input.len() < token.len() {
        insert(input, token, rng);
    } else {
        let at = rng.below(input.len() - token.len() + 1);
        input[at..at + token.len()].copy_from_slice(token);
    }
}

// ---- The targets ----

fn target(name: TargetName) -> Target<'static> {
    match name {
        TargetName::SignerRequestDecoder => Target {
            name: "signer_request_decoder",
            seeds: seeds::requests(),
            tokens: &[],
            run: &decode_hub_message,
        },
        TargetName::SignerResponseDecoder => Target {
            name: "signer_response_decoder",
            seeds: seeds::signer_messages(),
            tokens: &[],
            run: &decode_signer_message,
        },
        TargetName::ChainRpcResponse => Target {
            name: "chain_rpc_response",
            seeds: seeds::chain_replies(),
            tokens: seeds::HTTP_TOKENS,
            run: &parse_chain_reply,
        },
    }
}

fn outcome<T, E>(result: &Result<T, E>) -> Outcome {
    match result {
        Ok(_) => Outcome::Decoded,
        Err(_) => Outcome::Refused,
    }
}

/// What a signer does with bytes from the hub (`flotilla_signer::dial`).
fn decode_hub_message(bytes: &[u8]) -> Outcome {
    use flotilla_proto::wire::proto::{hub_message::Msg, HubMessage};
    match HubMessage::decode(bytes).map(|m| m.msg) {
        Ok(Some(Msg::Request(envelope))) => decode_request_twice(envelope),
        Ok(Some(_)) => Outcome::Decoded,
        Ok(None) | Err(_) => Outcome::Refused,
    }
}

/// Decodes as a signer's `RequestDecoder` does: the first time with an empty cache (as
/// `decode_request`), the second from the channel parameters the first kept. They must agree.
fn decode_request_twice(envelope: flotilla_proto::wire::proto::RequestEnvelope) -> Outcome {
    let mut decoder = flotilla_proto::wire::RequestDecoder::default();
    let (id, fresh) = decoder.decode(envelope.clone());
    let (again_id, cached) = decoder.decode(envelope);
    assert_eq!(id, again_id, "the request id changed between decodes");
    match (&fresh, &cached) {
        (Ok(a), Ok(b)) => assert_eq!(
            format!("{a:?}"),
            format!("{b:?}"),
            "the cached parameters changed the request"
        ),
        (Err(a), Err(b)) => assert_eq!(a, b, "the cached parameters changed the error"),
        _ => panic!("fresh and cached decodes disagree: {fresh:?} versus {cached:?}"),
    }
    outcome(&fresh)
}

/// What the hub does with bytes from a signer (`signer_client::hub`): answers, and the
/// handover of a proof. A well-formed error answer counts as decoded.
fn decode_signer_message(bytes: &[u8]) -> Outcome {
    use flotilla_proto::wire::proto::{signer_message::Msg, SignerMessage};
    use flotilla_proto::wire::{decode_handover, decode_response};
    match SignerMessage::decode(bytes).map(|m| m.msg) {
        Ok(Some(Msg::Response(envelope))) => {
            let answered_error = is_error_answer(&envelope);
            match decode_response(envelope).1 {
                Err(_) if answered_error => Outcome::Decoded,
                result => outcome(&result),
            }
        }
        Ok(Some(Msg::Proof(proof))) => match proof.handover {
            Some(handover) => outcome(&decode_handover(handover)),
            None => Outcome::Refused,
        },
        Ok(Some(_)) => Outcome::Decoded,
        Ok(None) | Err(_) => Outcome::Refused,
    }
}

fn is_error_answer(envelope: &flotilla_proto::wire::proto::ResponseEnvelope) -> bool {
    use flotilla_proto::wire::proto::{response_envelope::Result as Answer, ErrorKind};
    matches!(
        &envelope.result,
        Some(Answer::Error(e)) if ErrorKind::try_from(e.kind).is_ok_and(|k| k != ErrorKind::Unspecified)
    )
}

/// What `RpcClient::call` does with the bytes a chain node sent. An RPC error object counts
/// as decoded (the envelope was read); HTTP-level failures as refused.
fn parse_chain_reply(bytes: &[u8]) -> Outcome {
    use flotilla_host::chain::rpc::{parse_reply, RpcError};
    match parse_reply::<serde_json::Value>("fuzz", bytes) {
        Ok(_) | Err(RpcError::Rpc { .. }) => Outcome::Decoded,
        Err(_) => Outcome::Refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_target(
        seeds: Vec<Vec<u8>>,
        run: &(dyn Fn(&[u8]) -> Outcome + Sync),
        inputs: u64,
    ) -> TargetReport {
        let target = Target {
            name: "test",
            seeds,
            tokens: &[],
            run,
        };
        fuzz(&target, inputs, 42, 2)
    }

    #[test]
    fn a_panic_reachable_by_mutation_is_found() {
        let run = |input: &[u8]| {
            if input.starts_with(&[0x7f, 0x80]) {
                panic!("planted");
            }
            Outcome::Decoded
        };
        let report = run_target(vec![b"\x00\x01 fuzz me".to_vec()], &run, 200_000);
        assert!(report.panics > 0, "{report:?}");
        assert_eq!(report.inputs, 200_000);
        assert_eq!(report.ok + report.panics, 200_000);
        let sample = &report.panic_samples[0];
        assert!(sample.input_hex.starts_with("7f80"), "{sample:?}");
        assert!(sample.message.starts_with("planted at "), "{sample:?}");
    }

    #[test]
    fn a_target_that_never_panics_runs_every_input() {
        let run = |input: &[u8]| {
            if input.len().is_multiple_of(2) {
                Outcome::Decoded
            } else {
                Outcome::Refused
            }
        };
        let report = run_target(vec![b"seed".to_vec()], &run, 50_001);
        assert_eq!(report.panics, 0);
        assert!(report.panic_samples.is_empty());
        assert_eq!(report.inputs, 50_001);
        assert_eq!(report.ok + report.errors, 50_001);
        assert!(report.ok > 0 && report.errors > 0, "{report:?}");
    }

    #[test]
    fn a_run_repeats_from_its_seed() {
        let run = |input: &[u8]| {
            if input
                .iter()
                .map(|&b| b as u32)
                .sum::<u32>()
                .is_multiple_of(3)
            {
                Outcome::Decoded
            } else {
                Outcome::Refused
            }
        };
        let a = run_target(vec![b"abc".to_vec()], &run, 20_000);
        let b = run_target(vec![b"abc".to_vec()], &run, 20_000);
        assert_eq!((a.ok, a.errors), (b.ok, b.errors));
    }

    #[test]
    fn every_seed_decodes() {
        for name in ALL_TARGETS {
            let target = target(name);
            let failures = seeds::http_failures();
            for (i, seed) in target.seeds.iter().enumerate() {
                let expected = if failures.contains(seed) {
                    Outcome::Refused
                } else {
                    Outcome::Decoded
                };
                assert_eq!((target.run)(seed), expected, "{} seed {i}", target.name);
            }
        }
    }

    #[test]
    fn every_target_survives_a_short_run() {
        for name in ALL_TARGETS {
            let report = fuzz(&target(name), 20_000, 7, 2);
            assert_eq!(report.panics, 0, "{report:?}");
            assert!(report.ok > 1_000, "mutants rarely decode: {report:?}");
            assert!(report.errors > 1_000, "mutants rarely refused: {report:?}");
        }
    }
}
