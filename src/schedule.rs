//! When each playlist syncs: cron slots on croner 4, in a named or the local time zone.
//!
//! Why not tokio-cron-scheduler: it freezes the UTC offset when a job is created (an hour off
//! after every DST change until restart), forces a seconds field, and has no catch-up or
//! overlap guard (research notes §3). croner 4 parses crontab lines and resolves DST itself;
//! what remains is the small loop in [`Ticker`].
//!
//! Invariants:
//! - Every instant crossing this module's API is UTC; a zone is applied only inside croner, so a
//!   slot is always computed with the offset in force at that slot, never a cached one.
//! - A fixed-time slot in a DST gap runs once, right after the gap; a fixed-time slot in a
//!   repeated hour runs once, in its first occurrence (croner 4.0.3 behaviour, pinned by tests).
//! - [`Ticker`] never naps longer than [`MAX_NAP`] and judges due-ness by the wall clock,
//!   because tokio's monotonic timers stop while the machine is suspended (tokio#3185). Any
//!   number of slots missed during a suspend or a stall fire once, and the next slot is computed
//!   from the wall-clock "now", so a backlog is never replayed.
//! - [`Ticker::tick`] is cancel-safe: its state changes only when it returns a [`Tick`].

use chrono::{DateTime, Local, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Longest single sleep. Suspend-to-RAM stops tokio's clock, so a long sleep would wake hours
/// late; 60 s bounds that lateness to one nap after resume.
pub const MAX_NAP: Duration = Duration::from_secs(60);

/// A clock set back by more than this makes the ticker re-plan its next slot (see
/// [`Ticker::tick`]); smaller steps are NTP slews and are waited out.
const BACKWARD_JUMP: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "unknown time zone {0:?} (fix: use an IANA name such as \"Europe/Berlin\" or \"America/New_York\", or \"local\")"
    )]
    UnknownZone(String),
}

/// The time zone a cron line is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Zone {
    /// The machine's zone, looked up at every computation, so a changed system zone (a laptop
    /// that travelled) applies from the next slot on.
    #[default]
    Local,
    Named(Tz),
}

impl Zone {
    /// `""`, `"local"` (any case) or an IANA name such as `"Europe/Berlin"`; `"UTC"` works too.
    pub fn parse(s: &str) -> Result<Zone, ScheduleError> {
        let s = s.trim();
        if s.is_empty() || s.eq_ignore_ascii_case("local") {
            return Ok(Zone::Local);
        }
        Tz::from_str(s)
            .map(Zone::Named)
            .map_err(|_| ScheduleError::UnknownZone(s.to_string()))
    }
}

impl FromStr for Zone {
    type Err = ScheduleError;
    fn from_str(s: &str) -> Result<Zone, ScheduleError> {
        Zone::parse(s)
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Local => f.write_str("local"),
            Zone::Named(tz) => f.write_str(tz.name()),
        }
    }
}

fn next_in<Z: TimeZone>(cron: &Cron, tz: &Z, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after.with_timezone(tz), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn previous_in<Z: TimeZone>(cron: &Cron, tz: &Z, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_previous_occurrence(&now.with_timezone(tz), true)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The first slot strictly after `after`, or `None` when the pattern has no future slot.
pub fn next_after(cron: &Cron, zone: Zone, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match zone {
        Zone::Local => next_in(cron, &Local, after),
        Zone::Named(tz) => next_in(cron, &tz, after),
    }
}

/// The latest slot at or before `now`.
pub fn previous_slot(cron: &Cron, zone: Zone, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match zone {
        Zone::Local => previous_in(cron, &Local, now),
        Zone::Named(tz) => previous_in(cron, &tz, now),
    }
}

/// Anacron-style catch-up: should this playlist run right away, before waiting for its next
/// slot? Yes when it never succeeded, or when a slot passed since its last success (the
/// daemon was down, the machine asleep, or the run failed). However many slots were missed,
/// the answer is one run.
pub fn is_catch_up_due(
    cron: &Cron,
    zone: Zone,
    last_success: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    match last_success {
        None => true,
        Some(last) => next_after(cron, zone, last).is_some_and(|slot| slot <= now),
    }
}

/// Wall-clock time and sleeping, separated so the scheduling loop can be tested with a
/// simulated clock (including a suspend) and no real waiting.
pub trait Clock: Send + Sync {
    /// The wall clock: what the user's crontab means by "03:00".
    fn now(&self) -> DateTime<Utc>;
    /// A monotonic sleep: may last much longer on the wall clock if the machine is suspended.
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send;
}

/// The real clock: `Utc::now` and `tokio::time::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }
}

/// A clock for tests: `sleep(d)` returns at once and moves the wall clock by `d`, plus any
/// suspend queued with [`ManualClock::suspend_during_next_sleep`]. Clones share one clock.
#[derive(Debug, Clone)]
pub struct ManualClock {
    inner: Arc<Mutex<ManualInner>>,
}

#[derive(Debug)]
struct ManualInner {
    now: DateTime<Utc>,
    suspend: Option<chrono::TimeDelta>,
    naps: Vec<Duration>,
}

impl ManualClock {
    pub fn new(now: DateTime<Utc>) -> ManualClock {
        ManualClock {
            inner: Arc::new(Mutex::new(ManualInner {
                now,
                suspend: None,
                naps: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ManualInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the wall clock (forwards or backwards) without sleeping.
    pub fn set(&self, now: DateTime<Utc>) {
        self.lock().now = now;
    }

    pub fn advance(&self, by: chrono::TimeDelta) {
        self.lock().now += by;
    }

    /// The next sleep lasts `extra` longer on the wall clock than it asked for, as if the
    /// machine were suspended in the middle of it.
    pub fn suspend_during_next_sleep(&self, extra: chrono::TimeDelta) {
        self.lock().suspend = Some(extra);
    }

    /// Every sleep requested so far.
    pub fn naps(&self) -> Vec<Duration> {
        self.lock().naps.clone()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.lock().now
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        {
            let mut g = self.lock();
            g.naps.push(d);
            let step = chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX);
            let extra = g.suspend.take().unwrap_or_default();
            g.now = g.now + step + extra;
        }
        // Yield so a test's other tasks (a cancel, say) get to run between naps.
        tokio::task::yield_now()
    }
}

/// One firing of a schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick {
    /// The slot that came due: the earliest one when several were missed and coalesced, or,
    /// for the catch-up run of a playlist that never succeeded, the time it was requested.
    pub slot: DateTime<Utc>,
    /// The wall clock when the tick was noticed; `now - slot` is how late it is.
    pub now: DateTime<Utc>,
    /// This tick is the catch-up run requested with [`Ticker::with_catch_up`].
    pub catch_up: bool,
}

/// Waits for the slots of one cron line. One per playlist; drop it (or cancel the task that
/// polls it) to stop.
#[derive(Debug)]
pub struct Ticker<C: Clock> {
    /// The config's parsed line, shared (see [`crate::config::Schedule`]).
    cron: Arc<Cron>,
    zone: Zone,
    clock: C,
    next: Option<DateTime<Utc>>,
    catch_up: bool,
    last_seen: DateTime<Utc>,
}

impl<C: Clock> Ticker<C> {
    /// Starts with the first slot after the clock's "now".
    pub fn new(cron: Arc<Cron>, zone: Zone, clock: C) -> Ticker<C> {
        let now = clock.now();
        let next = next_after(&cron, zone, now);
        Ticker {
            cron,
            zone,
            clock,
            next,
            catch_up: false,
            last_seen: now,
        }
    }

    /// Makes the first tick immediate when [`is_catch_up_due`] says a slot was missed since
    /// `last_success` (from the state file). Its `slot` is the missed slot, or "now" for a
    /// playlist that never succeeded.
    pub fn with_catch_up(mut self, last_success: Option<DateTime<Utc>>) -> Ticker<C> {
        let now = self.clock.now();
        if is_catch_up_due(&self.cron, self.zone, last_success, now) {
            let missed = last_success.and_then(|last| next_after(&self.cron, self.zone, last));
            self.next = Some(missed.unwrap_or(now).min(now));
            self.catch_up = true;
        }
        self
    }

    /// The slot the ticker is waiting for.
    pub fn next_slot(&self) -> Option<DateTime<Utc>> {
        self.next
    }

    /// Waits until the next slot has passed on the wall clock. Returns `None` when the
    /// pattern has no future slot (it then never will).
    pub async fn tick(&mut self) -> Option<Tick> {
        loop {
            let due = self.next?;
            let now = self.clock.now();
            if now + BACKWARD_JUMP < self.last_seen {
                // The clock was set back (by hand, or a large NTP step): the planned slot may
                // now be a day away on the new clock while an earlier one is closer. Re-plan,
                // or a backwards jump of a day would silently skip a day.
                self.last_seen = now;
                if let Some(replanned) = next_after(&self.cron, self.zone, now)
                    && replanned < due
                    && !self.catch_up
                {
                    self.next = Some(replanned);
                    continue;
                }
            }
            self.last_seen = self.last_seen.max(now);
            if now >= due {
                let tick = Tick {
                    slot: due,
                    now,
                    catch_up: self.catch_up,
                };
                self.catch_up = false;
                // From `now`, not from `due`: that is what coalesces a backlog into one run.
                self.next = next_after(&self.cron, self.zone, now);
                return Some(tick);
            }
            // Naps end on the wall clock's minute boundaries, so the tickers of every
            // playlist wake together: one wakeup a minute for the daemon, not one per playlist.
            let to_boundary = MAX_NAP.as_millis() as i64
                - now
                    .timestamp_millis()
                    .rem_euclid(MAX_NAP.as_millis() as i64);
            let nap = (due - now)
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_millis(to_boundary as u64));
            self.clock.sleep(nap).await;
        }
    }
}

/// Calls `fire` at every slot until `cancel` is cancelled or the pattern runs out. `fire`
/// should only enqueue a sync request: a slow `fire` delays the next check, and slots that
/// pass meanwhile are coalesced into one tick.
pub async fn run_schedule<C: Clock>(
    ticker: Ticker<C>,
    cancel: CancellationToken,
    mut fire: impl FnMut(Tick),
) {
    let mut ticker = ticker;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            tick = ticker.tick() => match tick {
                Some(t) => fire(t),
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Schedule;

    fn cron(expr: &str) -> Arc<Cron> {
        Schedule::parse(expr).unwrap().cron
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn zone(name: &str) -> Zone {
        Zone::parse(name).unwrap()
    }

    #[test]
    fn zones_parse_by_iana_name_or_local() {
        assert_eq!(zone("local"), Zone::Local);
        assert_eq!(zone(""), Zone::Local);
        assert_eq!(
            zone("Europe/Berlin"),
            Zone::Named(chrono_tz::Europe::Berlin)
        );
        assert_eq!(zone("UTC").to_string(), "UTC");
        let e = Zone::parse("Mars/Olympus").unwrap_err();
        assert!(e.to_string().contains("IANA name"), "{e}");
    }

    #[test]
    fn berlin_spring_forward_fires_once_at_three() {
        let c = cron("30 2 * * *");
        let berlin = zone("Europe/Berlin");
        // 2026-03-29 00:00 CET; clocks jump from 02:00 CET to 03:00 CEST.
        let first = next_after(&c, berlin, utc("2026-03-28T23:00:00Z")).unwrap();
        assert_eq!(first, utc("2026-03-29T03:00:00+02:00"));
        let second = next_after(&c, berlin, first).unwrap();
        assert_eq!(second, utc("2026-03-30T02:30:00+02:00"));
    }

    #[test]
    fn berlin_fall_back_fires_once_in_the_first_half() {
        let c = cron("30 2 * * *");
        let berlin = zone("Europe/Berlin");
        // 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
        let first = next_after(&c, berlin, utc("2026-10-24T22:00:00Z")).unwrap();
        assert_eq!(first, utc("2026-10-25T02:30:00+02:00"));
        let second = next_after(&c, berlin, first).unwrap();
        assert_eq!(
            second,
            utc("2026-10-26T02:30:00+01:00"),
            "no second run at 02:30 CET"
        );
    }

    #[test]
    fn new_york_both_transitions() {
        let ny = zone("America/New_York");
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT.
        let c = cron("30 2 * * *");
        let spring = next_after(&c, ny, utc("2026-03-08T04:00:00Z")).unwrap();
        assert_eq!(spring, utc("2026-03-08T03:00:00-04:00"));
        assert_eq!(
            next_after(&c, ny, spring).unwrap(),
            utc("2026-03-09T02:30:00-04:00")
        );
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        let c = cron("30 1 * * *");
        let fall = next_after(&c, ny, utc("2026-11-01T04:00:00Z")).unwrap();
        assert_eq!(fall, utc("2026-11-01T01:30:00-04:00"));
        assert_eq!(
            next_after(&c, ny, fall).unwrap(),
            utc("2026-11-02T01:30:00-05:00")
        );
    }

    #[test]
    fn interval_patterns_keep_their_pace_through_the_repeated_hour() {
        // "every 30 minutes" means elapsed time: the repeated hour gets its runs too.
        let c = cron("*/30 * * * *");
        let berlin = zone("Europe/Berlin");
        let mut t = utc("2026-10-25T01:59:00+02:00");
        let mut seen = Vec::new();
        for _ in 0..6 {
            t = next_after(&c, berlin, t).unwrap();
            seen.push(t);
        }
        let expected: Vec<_> = [
            "2026-10-25T02:00:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:00:00+01:00",
            "2026-10-25T02:30:00+01:00",
            "2026-10-25T03:00:00+01:00",
            "2026-10-25T03:30:00+01:00",
        ]
        .iter()
        .map(|s| utc(s))
        .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn five_and_six_field_crons() {
        let utc_zone = zone("UTC");
        let five = cron("*/15 * * * *");
        assert_eq!(
            next_after(&five, utc_zone, utc("2026-05-01T10:07:13Z")),
            Some(utc("2026-05-01T10:15:00Z"))
        );
        let six = cron("30 */15 * * * *");
        assert_eq!(
            next_after(&six, utc_zone, utc("2026-05-01T10:07:13Z")),
            Some(utc("2026-05-01T10:15:30Z"))
        );
        assert_eq!(
            previous_slot(&six, utc_zone, utc("2026-05-01T10:07:13Z")),
            Some(utc("2026-05-01T10:00:30Z"))
        );
        // A slot exactly at "now" is the previous slot, not the next one.
        assert_eq!(
            previous_slot(&five, utc_zone, utc("2026-05-01T10:15:00Z")),
            Some(utc("2026-05-01T10:15:00Z"))
        );
        assert_eq!(
            next_after(&five, utc_zone, utc("2026-05-01T10:15:00Z")),
            Some(utc("2026-05-01T10:30:00Z"))
        );
    }

    #[test]
    fn catch_up_due_and_not_due() {
        let c = cron("0 3 * * *");
        let z = zone("Europe/Berlin");
        let now = utc("2026-06-10T12:00:00+02:00");
        assert!(
            is_catch_up_due(&c, z, None, now),
            "never succeeded: run now"
        );
        assert!(
            !is_catch_up_due(&c, z, Some(utc("2026-06-10T03:00:05+02:00")), now),
            "succeeded after today's slot"
        );
        assert!(
            is_catch_up_due(&c, z, Some(utc("2026-06-09T03:00:05+02:00")), now),
            "missed today's 03:00"
        );
        assert!(
            is_catch_up_due(&c, z, Some(utc("2026-05-01T03:00:00+02:00")), now),
            "weeks of missed slots still mean one run"
        );
        assert!(
            !is_catch_up_due(
                &c,
                z,
                Some(utc("2026-06-10T02:59:00+02:00")),
                utc("2026-06-10T02:59:30+02:00")
            ),
            "the next slot has not come yet"
        );
    }

    #[tokio::test]
    async fn ticker_fires_at_the_slot_with_short_naps() {
        let clock = ManualClock::new(utc("2026-03-29T00:00:00+01:00"));
        let mut t = Ticker::new(cron("30 2 * * *"), zone("Europe/Berlin"), clock.clone());
        let tick = t.tick().await.unwrap();
        assert_eq!(tick.slot, utc("2026-03-29T03:00:00+02:00"));
        assert_eq!(tick.now, tick.slot);
        assert!(!tick.catch_up);
        assert!(clock.naps().iter().all(|n| *n <= MAX_NAP));
        assert_eq!(t.next_slot(), Some(utc("2026-03-30T02:30:00+02:00")));
    }

    #[tokio::test]
    async fn suspend_through_many_slots_fires_once() {
        let clock = ManualClock::new(utc("2026-05-01T22:10:00Z"));
        let mut t = Ticker::new(cron("0 * * * *"), zone("UTC"), clock.clone());
        assert_eq!(t.next_slot(), Some(utc("2026-05-01T23:00:00Z")));
        // The first 60 s nap lasts 8 h on the wall clock: slots 23:00 to 06:00 are missed.
        clock.suspend_during_next_sleep(chrono::TimeDelta::hours(8));
        let first = t.tick().await.unwrap();
        assert_eq!(first.slot, utc("2026-05-01T23:00:00Z"));
        assert_eq!(first.now, utc("2026-05-02T06:11:00Z"));
        assert_eq!(
            clock.naps(),
            vec![MAX_NAP],
            "woke after one nap, not after the planned 50 min"
        );
        // The backlog is not replayed: the next tick is the next real slot.
        assert_eq!(t.next_slot(), Some(utc("2026-05-02T07:00:00Z")));
        let second = t.tick().await.unwrap();
        assert_eq!(second.slot, utc("2026-05-02T07:00:00Z"));
    }

    #[tokio::test]
    async fn catch_up_fires_immediately_once() {
        let clock = ManualClock::new(utc("2026-06-10T12:00:00Z"));
        let last = Some(utc("2026-06-08T03:00:00Z"));
        let mut t = Ticker::new(cron("0 3 * * *"), zone("UTC"), clock.clone()).with_catch_up(last);
        let first = t.tick().await.unwrap();
        assert!(first.catch_up);
        assert_eq!(first.slot, utc("2026-06-09T03:00:00Z"));
        assert!(clock.naps().is_empty(), "no waiting for a catch-up run");
        let second = t.tick().await.unwrap();
        assert!(!second.catch_up);
        assert_eq!(second.slot, utc("2026-06-11T03:00:00Z"));

        // Not due: the first tick waits for the slot.
        let clock = ManualClock::new(utc("2026-06-10T12:00:00Z"));
        let last = Some(utc("2026-06-10T03:00:01Z"));
        let mut t = Ticker::new(cron("0 3 * * *"), zone("UTC"), clock).with_catch_up(last);
        assert_eq!(t.tick().await.unwrap().slot, utc("2026-06-11T03:00:00Z"));

        // Never succeeded: runs now.
        let now = utc("2026-06-10T12:00:00Z");
        let mut t =
            Ticker::new(cron("0 3 * * *"), zone("UTC"), ManualClock::new(now)).with_catch_up(None);
        let tick = t.tick().await.unwrap();
        assert!(tick.catch_up);
        assert_eq!(tick.slot, now);
    }

    #[tokio::test]
    async fn clock_set_back_replans() {
        let clock = ManualClock::new(utc("2026-06-10T12:00:00Z"));
        let mut t = Ticker::new(cron("0 13 * * *"), zone("UTC"), clock.clone());
        assert_eq!(t.next_slot(), Some(utc("2026-06-10T13:00:00Z")));
        let _ = t.tick().await.unwrap();
        assert_eq!(t.next_slot(), Some(utc("2026-06-11T13:00:00Z")));
        // Someone sets the clock back a day: today's 13:00 (on the new clock) still runs.
        clock.set(utc("2026-06-09T12:00:00Z"));
        assert_eq!(t.tick().await.unwrap().slot, utc("2026-06-09T13:00:00Z"));
    }

    #[tokio::test]
    async fn run_schedule_stops_on_cancel() {
        let clock = ManualClock::new(utc("2026-06-10T12:00:00Z"));
        let ticker = Ticker::new(cron("*/10 * * * *"), zone("UTC"), clock);
        let cancel = CancellationToken::new();
        let mut fired = Vec::new();
        let c2 = cancel.clone();
        run_schedule(ticker, cancel, |t| {
            fired.push(t.slot);
            if fired.len() == 3 {
                c2.cancel();
            }
        })
        .await;
        assert_eq!(
            fired,
            vec![
                utc("2026-06-10T12:10:00Z"),
                utc("2026-06-10T12:20:00Z"),
                utc("2026-06-10T12:30:00Z")
            ]
        );
    }
}
