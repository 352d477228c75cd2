//! `mpirun -n N kiln train ...`: joining the launcher's MPI world, ending
//! every rank when one fails, and `kiln launch`, a thin wrapper that execs
//! `mpirun` with the flags a small machine needs.

use std::sync::{Arc, OnceLock};

use anyhow::bail;
use kiln_trainer::world::Collective;

use super::args::LaunchArgs;

#[cfg(feature = "mpi")]
static MPI: OnceLock<Arc<kiln_trainer::world::mpi::MpiCollective>> = OnceLock::new();
#[cfg(not(feature = "mpi"))]
static MPI: OnceLock<()> = OnceLock::new();

/// Whether this process was started by an MPI launcher.
pub fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|k| std::env::var_os(k).is_some())
}

/// The collective of `kiln train`: MPI's world under `mpirun`, else one process.
pub fn collective() -> anyhow::Result<Arc<dyn Collective>> {
    if !launched_by_mpi() {
        return Ok(kiln_trainer::run::setup::single_process());
    }
    mpi_collective()
}

#[cfg(feature = "mpi")]
fn mpi_collective() -> anyhow::Result<Arc<dyn Collective>> {
    let c = Arc::new(kiln_trainer::world::mpi::MpiCollective::init()?);
    let _ = MPI.set(c.clone());
    Ok(c)
}

#[cfg(not(feature = "mpi"))]
fn mpi_collective() -> anyhow::Result<Arc<dyn Collective>> {
    let _ = MPI.get();
    bail!("kiln was started by an MPI launcher but built without MPI: rebuild with `cargo build --release --features kiln-trainer/mpi` (needs Open MPI: apt-get install libopenmpi-dev openmpi-bin libclang-dev)")
}

/// "rank R of N: " in a distributed run, else "".
pub fn rank_prefix() -> String {
    #[cfg(feature = "mpi")]
    if let Some(c) = MPI.get() {
        let w = c.world();
        if w.size > 1 {
            return format!("rank {} of {}: ", w.rank, w.size);
        }
    }
    String::new()
}

/// Finalizes MPI after a command that joined an MPI world.
pub fn finalize() {
    #[cfg(feature = "mpi")]
    if let Some(c) = MPI.get() {
        c.finalize();
    }
}

/// In a distributed run, ends every rank (`MPI_Abort`): the others would
/// otherwise wait in their next collective. Returns in a single process.
pub fn abort_job(code: i32) {
    #[cfg(feature = "mpi")]
    if let Some(c) = MPI.get() {
        if c.world().size > 1 {
            c.abort(code);
        }
    }
    let _ = code;
}

/// `kiln launch -n N [--threads-per-rank T] -- ARGS...`: execs `mpirun`
/// running this kiln binary with ARGS on N ranks.
pub fn launch(args: LaunchArgs) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    if args.ranks == 0 {
        bail!("-n must be at least 1");
    }
    let exe = std::env::current_exe()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cmd = std::process::Command::new(&args.mpirun);
    // Harmless when not root; containers and CI often run as root.
    cmd.arg("--allow-run-as-root");
    if args.ranks > cores {
        cmd.arg("--oversubscribe");
    }
    // Each rank's own thread pool decides where its threads run.
    cmd.args(["--bind-to", "none"]);
    if let Some(t) = args.threads_per_rank {
        cmd.args(["-x", &format!("RAYON_NUM_THREADS={t}")]);
    }
    if let Some(h) = &args.hostfile {
        cmd.arg("--hostfile").arg(h);
    }
    cmd.arg("-n")
        .arg(args.ranks.to_string())
        .arg(exe)
        .args(&args.command);
    eprintln!("kiln launch: {cmd:?}");
    let err = cmd.exec();
    bail!(
        "cannot run {} ({err}): install Open MPI (apt-get install openmpi-bin) or pass --mpirun PATH",
        args.mpirun
    )
}
