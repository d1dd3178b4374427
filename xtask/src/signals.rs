//! Ctrl-C and SIGTERM. The handler only records the signal; the tool runner
//! stops its child's process group, long in-process loops call [`check`], and
//! the error unwinds through guards that remove temporary state.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
static SIGNAL: AtomicI32 = AtomicI32::new(0);
static CHILDREN: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// The error that unwinds a run after SIGINT/SIGTERM.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "interrupted by signal; stopped children and removed temporary files"
        )
    }
}
impl std::error::Error for Interrupted {}

pub fn install() -> anyhow::Result<()> {
    let flag = FLAG
        .get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone();
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone())?;
        // Remember which one for the exit code (130 / 143).
        // SAFETY: the action only stores into an atomic (async-signal-safe).
        unsafe {
            signal_hook::low_level::register(sig, move || SIGNAL.store(sig, Ordering::SeqCst))?;
        }
    }
    // A write past the file-size limit then fails with EFBIG, like a full
    // disk, instead of killing kiln before its guards remove temporary state.
    // SAFETY: setting a signal to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    Ok(())
}

thread_local! {
    /// Set on a thread doing one part of a larger job ([`with_cancel`]).
    static CANCEL: std::cell::RefCell<Option<Arc<AtomicBool>>> = const { std::cell::RefCell::new(None) };
}

/// A signal arrived, or the job this thread works for was cancelled.
pub fn interrupted() -> bool {
    FLAG.get().is_some_and(|f| f.load(Ordering::SeqCst))
        || CANCEL.with(|c| {
            c.borrow()
                .as_ref()
                .is_some_and(|t| t.load(Ordering::SeqCst))
        })
}

/// Run `f` on this thread as part of a job that `cancel` stops: once it is
/// set, [`interrupted`] is true on this thread, so the tool runner stops the
/// running child and `f` unwinds through its guards as on Ctrl-C (the
/// executor stops a plan's other steps when one fails).
pub fn with_cancel<T>(cancel: Arc<AtomicBool>, f: impl FnOnce() -> T) -> T {
    CANCEL.with(|c| *c.borrow_mut() = Some(cancel));
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CANCEL.with(|c| *c.borrow_mut() = None);
        }
    }
    let _reset = Reset;
    f()
}

/// Exit code for the recorded signal (128 + signo).
pub fn exit_code() -> i32 {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => 130,
        s => 128 + s,
    }
}

/// Call in long loops: returns [`Interrupted`] once a signal arrived.
pub fn check() -> anyhow::Result<()> {
    if interrupted() {
        Err(Interrupted.into())
    } else {
        Ok(())
    }
}

/// Registers a running child's process group so a last-resort cleanup can stop it.
pub struct ChildGuard(i32);

impl ChildGuard {
    pub fn new(pgid: i32) -> ChildGuard {
        CHILDREN.lock().unwrap().push(pgid);
        ChildGuard(pgid)
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        CHILDREN.lock().unwrap().retain(|p| *p != self.0);
    }
}

/// SIGTERM the process group, wait up to 5 s, then SIGKILL it.
pub fn stop_group(pgid: i32) {
    unsafe { libc::kill(-pgid, libc::SIGTERM) };
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        if unsafe { libc::kill(-pgid, 0) } != 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    unsafe { libc::kill(-pgid, libc::SIGKILL) };
}

/// Stop every child still registered (called before exiting on a signal).
pub fn stop_all() {
    let groups: Vec<i32> = CHILDREN.lock().unwrap().clone();
    for g in groups {
        stop_group(g);
    }
}
