//! `quench bench acks`: what acknowledging a revocation costs each side, per edge.
//!
//! Every edge acknowledges every change it applies, so with N edges a manager checks N acknowledgements
//! per revocation. This runs both halves of that in this process, on the manager's own code: the edge's
//! side builds and authenticates each acknowledgement (`SignedAck::mac_ack`, or `seal_ack` for the
//! Ed25519 form edges sent before), the manager's side checks it against the registrations in a real
//! store (`EdgeKeys::open`) and counts it (`Propagation::record`), exactly what the manager's
//! acknowledgement task does with each message after the bus client has read it off the socket.
//!
//! Each side is one function (`edge_side`, `manager_side`), so `valgrind --tool=callgrind
//! --toggle-collect='*acks::manager_side*'` counts the instructions of that side alone; the script
//! `scripts/bench-acks` does that for both sides and both forms. Wall-clock times are printed too, but
//! instruction counts are the figure: they repeat across runs and machines.

use std::{
    hint::black_box,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::{Args, ValueEnum};
use quench_bus::{Ack, EdgeRegistration, SignedAck};
use quench_core::{
    Seq, Timestamp,
    sign::{Signer, ack::AckKey},
};
use quench_manager::{
    Propagation,
    edges::{EdgeKeys, Registration},
};
use quench_store::{Store, sqlite::SqliteStore};
use serde_json::json;

#[derive(Debug, Args)]
pub struct AcksArgs {
    /// Edges acknowledging each revocation.
    #[arg(long, default_value_t = 50)]
    pub edges: usize,
    /// Revocations every edge acknowledges.
    #[arg(long, default_value_t = 200)]
    pub revocations: usize,
    /// How acknowledgements are authenticated: `mac` (HMAC-SHA256, what edges send) or `signature`
    /// (Ed25519, what edges sent before; still accepted).
    #[arg(long, value_enum, default_value_t = Form::Mac)]
    pub form: Form,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Form {
    Mac,
    Signature,
}

/// One edge as the bench plays it: its id, signing key and MAC key.
struct Edge {
    id: String,
    signer: Signer,
    mac: AckKey,
}

pub async fn run(args: AcksArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.edges > 0 && args.revocations > 0,
        "--edges and --revocations must be at least 1"
    );
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("quench.db")).await?);
    let keys = EdgeKeys::new(store);
    let mut edges = Vec::with_capacity(args.edges);
    for n in 0..args.edges {
        let signer = Signer::generate()?;
        let id = format!("edge-{n}");
        let registration = Registration::parse(&EdgeRegistration::of(&id, "eu", &signer))?;
        keys.register(&registration).await?;
        let mac = AckKey::of(&signer);
        edges.push(Edge { id, signer, mac });
    }
    let propagation = Propagation::new(Duration::from_secs(600));

    // Revocation 0 warms the caches (registrations read, every edge tracked) and is not counted.
    let warm = edge_side(&edges, 0, args.form);
    let accepted = manager_side(&keys, &propagation, &warm).await;
    anyhow::ensure!(
        accepted == edges.len(),
        "warm-up: {accepted} of {} acknowledgements accepted",
        edges.len()
    );

    let mut sealing = Duration::ZERO;
    let mut checking = Duration::ZERO;
    let mut counted = 0;
    for revocation in 1..=args.revocations {
        let started = Instant::now();
        let sealed = edge_side(&edges, revocation as u64, args.form);
        sealing += started.elapsed();
        let started = Instant::now();
        counted += manager_side(&keys, &propagation, &sealed).await;
        checking += started.elapsed();
    }
    let total = args.edges * args.revocations;
    anyhow::ensure!(
        counted == total,
        "only {counted} of {total} acknowledgements were accepted: the bench measured refusals"
    );

    let per_ack = |d: Duration| d.as_nanos() as f64 / total as f64;
    let per_revocation = |d: Duration| d.as_secs_f64() * 1e6 / args.revocations as f64;
    let form = match args.form {
        Form::Mac => "mac",
        Form::Signature => "signature",
    };
    if args.json {
        println!(
            "{}",
            json!({
                "form": form,
                "edges": args.edges,
                "revocations": args.revocations,
                "acks": total,
                "edge_ns_per_ack": per_ack(sealing),
                "manager_ns_per_ack": per_ack(checking),
                "manager_us_per_revocation": per_revocation(checking),
            })
        );
    } else {
        println!(
            "{total} acknowledgements ({form}) from {} edges for {} revocations",
            args.edges, args.revocations
        );
        println!(
            "  edge:    {:>9.0} ns per acknowledgement (build + authenticate)",
            per_ack(sealing)
        );
        println!(
            "  manager: {:>9.0} ns per acknowledgement (check + count), {:.1} µs per revocation",
            per_ack(checking),
            per_revocation(checking)
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// What every edge does after applying revocation `applied`: build its acknowledgement and
/// authenticate it.
#[inline(never)]
fn edge_side(edges: &[Edge], applied: u64, form: Form) -> Vec<SignedAck> {
    edges
        .iter()
        .map(|edge| {
            let ack = Ack {
                edge: edge.id.clone(),
                region: "eu".into(),
                applied: Seq::new(applied),
                at: Timestamp::now(),
            };
            match form {
                Form::Mac => SignedAck::mac_ack(edge.signer.id(), &edge.mac, &ack),
                Form::Signature => SignedAck::seal_ack(&edge.signer, &ack),
            }
        })
        .collect()
}

/// What the manager does with each acknowledgement it receives: check it against the edge's
/// registration and count it. Returns how many it accepted.
#[inline(never)]
async fn manager_side(keys: &EdgeKeys, propagation: &Propagation, sealed: &[SignedAck]) -> usize {
    let mut accepted = 0;
    for ack in sealed {
        let Some(ack) = keys.open(black_box(ack)).await else {
            continue;
        };
        if propagation.record(&ack, Timestamp::now()).is_ok() {
            accepted += 1;
        }
    }
    accepted
}
