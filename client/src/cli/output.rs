//! How events reach the user: a progress bar on a terminal, plain lines otherwise, nothing
//! but errors with `--quiet`, and one JSON object per line with `--json` (schema in the
//! README). JSON goes to stdout, except when stdout carries a received stream: then it goes
//! to stderr. The receiver learns which only from the offer, so it holds back the few events
//! before the offer and writes them once it knows.

use std::{
    collections::HashMap,
    io::{IsTerminal, Write},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use convey::{Event, EventSink};
use convey_shared::display;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// How much to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Human,
    Quiet,
    Json,
}

/// Plain (non-terminal) progress lines at most this often.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) mode: Mode,
    verb: &'static str,
    tty: bool,
    /// Where the bars draw (stderr), so status lines print above all of them.
    bars: MultiProgress,
    bar: Mutex<Option<ProgressBar>>,
    /// A sender of several receivers: one bar per receiver that is transferring.
    receiver_bars: Mutex<HashMap<u32, ProgressBar>>,
    /// The path in use, once known.
    path: Mutex<Option<String>>,
    json_to_stderr: AtomicBool,
    /// JSON lines held back until the offer says where they go (receiver).
    held: Mutex<Option<Vec<String>>>,
    last_plain: Mutex<Option<Instant>>,
}

impl Output {
    /// `hold_json`: keep JSON lines until the offer arrives (the receiver).
    pub(crate) fn new(mode: Mode, verb: &'static str, hold_json: bool) -> Arc<Self> {
        Arc::new(Self {
            mode,
            verb,
            tty: std::io::stderr().is_terminal(),
            bars: MultiProgress::new(),
            bar: Mutex::default(),
            receiver_bars: Mutex::default(),
            path: Mutex::default(),
            json_to_stderr: AtomicBool::new(false),
            held: Mutex::new(hold_json.then(Vec::new)),
            last_plain: Mutex::default(),
        })
    }

    /// An event sink that first offers each event to `special` (return true to consume it).
    pub(crate) fn sink(
        self: &Arc<Self>,
        special: impl Fn(&Event) -> bool + Send + Sync + 'static,
    ) -> EventSink {
        let me = self.clone();
        Arc::new(move |ev| {
            if special(&ev) {
                return;
            }
            if me.mode == Mode::Json {
                me.json(&ev);
            } else {
                me.show(&ev);
            }
        })
    }

    /// Write one JSON line. Every string in it may carry peer-supplied text, so the line
    /// goes through the shared escaping ([`display::json_text`]): the same JSON value, with
    /// nothing a terminal would obey.
    pub(crate) fn json(&self, value: &impl serde::Serialize) {
        let Ok(value) = serde_json::to_value(value) else {
            return;
        };
        let line = display::json_text(&value.to_string());
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let lines = match held.as_mut() {
            Some(h) if value["event"] != "offer" && value["event"] != "error" => {
                h.push(line);
                return;
            }
            Some(h) => {
                // From the offer on, stdout may carry the stream itself.
                self.json_to_stderr
                    .store(value["kind"] == "stream", Ordering::Relaxed);
                let mut lines = std::mem::take(h);
                lines.push(line);
                *held = None;
                lines
            }
            None => vec![line],
        };
        if self.json_to_stderr.load(Ordering::Relaxed) {
            let mut err = std::io::stderr().lock();
            for l in lines {
                let _ = writeln!(err, "{l}");
            }
        } else {
            let mut out = std::io::stdout().lock();
            for l in lines {
                let _ = writeln!(out, "{l}");
            }
            let _ = out.flush();
        }
    }

    /// A status line for people (stderr), unless quiet.
    pub(crate) fn say(&self, line: &str) {
        if self.mode == Mode::Human {
            self.suspend(|| eprintln!("{line}"));
        }
    }

    fn suspend(&self, f: impl FnOnce()) {
        self.bars.suspend(f);
    }

    /// The final error, as a line for people or a JSON event. Error messages can quote the
    /// peer (a reason, a name, a parser's complaint about its message), so each is escaped
    /// and bounded to one line here, whatever produced it.
    pub(crate) fn error(&self, message: &str, exit_code: u8) {
        self.finish_bar();
        let message = display::line(message);
        if self.mode == Mode::Json {
            self.json(&serde_json::json!({"event": "error", "message": message, "exit_code": exit_code}));
        } else {
            eprintln!("error: {message}");
        }
    }

    fn finish_bar(&self) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
        for (_, bar) in self
            .receiver_bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
        {
            bar.finish_and_clear();
        }
    }

    /// Receiver `index`'s bar (on a terminal only; JSON carries the event itself).
    fn receiver_progress(&self, index: u32, bytes: u64, total: u64) {
        if !self.tty {
            return;
        }
        let mut bars = self.receiver_bars.lock().unwrap_or_else(|e| e.into_inner());
        let bar = bars.entry(index).or_insert_with(|| {
            let bar = self.bars.add(new_bar(Some(total)));
            bar.set_prefix(format!("Receiver {index}"));
            bar
        });
        bar.set_position(bytes.min(total));
    }

    /// Receiver `index` no longer transfers (done, declined, failed): its bar goes.
    fn receiver_ended(&self, index: u32) {
        if let Some(bar) = self
            .receiver_bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&index)
        {
            bar.finish_and_clear();
        }
    }

    fn show(&self, ev: &Event) {
        if self.mode != Mode::Human {
            return;
        }
        match ev {
            Event::Transport { path } => {
                *self.path.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.clone());
            }
            Event::Resumed { bytes } => self.say(&format!("Resuming: {} already here", human_bytes(*bytes))),
            Event::Receiver {
                index,
                state,
                message,
                done,
                of,
                tries,
                allowed,
            } => {
                if !matches!(state.as_str(), "connected" | "accepted") {
                    self.receiver_ended(*index);
                }
                let of = of.map_or_else(|| "any".to_owned(), |n| n.to_string());
                let line = match state.as_str() {
                    "connected" => format!("Receiver {index} connected"),
                    "accepted" => format!("Receiver {index} accepted"),
                    "done" => format!("Receiver {index} done ({done} of {of} done)"),
                    "declined" => format!("Receiver {index} declined"),
                    "wrong-code" => format!("Someone tried a wrong code: {tries} of {allowed} allowed"),
                    _ => format!(
                        "Receiver {index} failed: {}",
                        message
                            .as_deref()
                            .map(|m| convey::display_safe(m, false))
                            .unwrap_or_default()
                    ),
                };
                self.say(&line);
            }
            Event::ReceiverProgress { index, bytes, total } => self.receiver_progress(*index, *bytes, *total),
            Event::Closed { reason } => self.say(&format!(
                "The code is closed to new receivers ({reason}); receivers already in carry on"
            )),
            Event::AllHeld => self.say("Every piece is now with the receivers; you may close convey (Ctrl-C): they finish from each other"),
            Event::Seeding { .. } => {
                self.say("Serving the other receivers until they are done (Ctrl-C stops)")
            }
            Event::Progress { bytes, total } => self.progress(*bytes, *total),
            Event::Done { .. } => self.finish_bar(),
            _ => {}
        }
    }

    fn progress(&self, bytes: u64, total: Option<u64>) {
        let path = match &*self.path.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(p) => format!(" via {p}"),
            None => String::new(),
        };
        if self.tty {
            let mut bar = self.bar.lock().unwrap_or_else(|e| e.into_inner());
            let bar = bar.get_or_insert_with(|| self.bars.add(new_bar(total)));
            bar.set_prefix(format!("{}{path}", self.verb));
            bar.set_position(bytes);
            return;
        }
        let mut last = self.last_plain.lock().unwrap_or_else(|e| e.into_inner());
        let complete = total == Some(bytes);
        if last.is_some_and(|t| t.elapsed() < PLAIN_EVERY) && !complete {
            return;
        }
        *last = Some(Instant::now());
        match total {
            Some(t) => eprintln!(
                "{} {} of {} ({:.0}%){path}",
                self.verb,
                human_bytes(bytes),
                human_bytes(t),
                if t == 0 {
                    100.0
                } else {
                    bytes as f64 * 100.0 / t as f64
                }
            ),
            None => eprintln!("{} {}{path}", self.verb, human_bytes(bytes)),
        }
    }
}

fn new_bar(total: Option<u64>) -> ProgressBar {
    match total {
        Some(t) => ProgressBar::new(t).with_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{prefix} {spinner} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    }
}

pub(crate) fn human_bytes(n: u64) -> String {
    indicatif::BinaryBytes(n).to_string()
}
