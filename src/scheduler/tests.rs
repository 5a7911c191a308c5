use super::*;

const MINUTE_MS: u64 = 60_000;

#[tokio::test(start_paused = true)]
async fn first_tick_is_aligned_to_the_interval_on_the_wall_clock() {
    let now = Instant::now();
    let five_minutes = Duration::from_secs(300);
    // 12:03:20 on some day: the next 5-minute boundary is 12:05:00.
    let wall = 1_700_000_000_000 - (1_700_000_000_000 % (5 * MINUTE_MS)) + 200_000;
    let ticker = Ticker::aligned(five_minutes, Duration::ZERO, now, wall);
    assert_eq!(ticker.next() - now, Duration::from_secs(100));

    // Exactly on a boundary: fire now.
    let on_boundary = wall - 200_000;
    let ticker = Ticker::aligned(five_minutes, Duration::ZERO, now, on_boundary);
    assert_eq!(ticker.next(), now);
}

#[tokio::test(start_paused = true)]
async fn offset_shifts_every_tick_by_the_same_amount() {
    let now = Instant::now();
    let interval = Duration::from_secs(60);
    let wall = 10 * MINUTE_MS + 5_000; // 5 s past a minute
    let mut ticker = Ticker::aligned(interval, Duration::from_secs(7), now, wall);
    assert_eq!(ticker.next() - now, Duration::from_secs(2));
    let first = ticker.next();
    ticker.advance(first);
    assert_eq!(ticker.next() - first, interval);

    // An offset past the tick of this minute moves to the next minute's.
    let late = Ticker::aligned(interval, Duration::from_secs(3), now, wall);
    assert_eq!(late.next() - now, Duration::from_secs(58));
}

#[test]
fn jitter_stays_within_its_bound_and_the_interval() {
    for _ in 0..1000 {
        let j = jitter(Duration::from_secs(5), Duration::from_secs(60));
        assert!(j < Duration::from_secs(5));
        let j = jitter(Duration::from_secs(5), Duration::from_secs(2));
        assert!(j < Duration::from_secs(2));
    }
    assert_eq!(
        jitter(Duration::ZERO, Duration::from_secs(60)),
        Duration::ZERO
    );
}

#[tokio::test(start_paused = true)]
async fn advancing_past_an_overrun_skips_the_covered_ticks() {
    let start = Instant::now();
    let mut ticker = Ticker::aligned(Duration::from_secs(10), Duration::ZERO, start, 0);
    assert_eq!(ticker.advance(start + Duration::from_secs(3)), 0);
    assert_eq!(ticker.next(), start + Duration::from_secs(10));
    // The poll at t=10 runs until t=35: ticks at 20 and 30 are skipped.
    assert_eq!(ticker.advance(start + Duration::from_secs(35)), 2);
    assert_eq!(ticker.next(), start + Duration::from_secs(40));
    // Ending exactly on a tick skips it too: it cannot start in the past.
    assert_eq!(ticker.advance(start + Duration::from_secs(50)), 1);
    assert_eq!(ticker.next(), start + Duration::from_secs(60));
}

/// A job that records when it started and then works for a while.
struct Recorder {
    origin: Instant,
    work: Duration,
    starts: Vec<Duration>,
}

impl Job for Recorder {
    async fn run_once(&mut self) {
        self.starts.push(self.origin.elapsed());
        tokio::time::sleep(self.work).await;
    }
}

/// Runs a poller whose polls take `work` each, for `run_for`, and returns
/// the (virtual) times its polls started plus its stats.
async fn drive(
    interval: Duration,
    work: Duration,
    run_for: Duration,
) -> (Vec<Duration>, Arc<PollerCounters>) {
    let origin = Instant::now();
    let stats = Arc::new(PollerCounters::default());
    let (stop, shutdown) = watch::channel(false);
    let ticker = Ticker::aligned(interval, Duration::ZERO, origin, 0);
    let task = {
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut job = Recorder {
                origin,
                work,
                starts: Vec::new(),
            };
            run("test", ticker, stats, origin, shutdown, &mut job).await;
            job.starts
        })
    };
    tokio::time::sleep(run_for).await;
    stop.send(true).unwrap();
    (task.await.unwrap(), stats)
}

#[tokio::test(start_paused = true)]
async fn polls_run_once_per_tick() {
    let (starts, stats) = drive(
        Duration::from_secs(10),
        Duration::from_secs(1),
        Duration::from_secs(45),
    )
    .await;
    let secs: Vec<u64> = starts.iter().map(|d| d.as_secs()).collect();
    assert_eq!(secs, [0, 10, 20, 30, 40]);
    assert_eq!(stats.skipped_ticks.load(Ordering::Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn an_overrunning_poll_is_never_run_twice_at_once_and_skips_are_counted() {
    // Each poll takes 25 s at a 10 s interval: polls start at 0, 30, 60, 90.
    let (starts, stats) = drive(
        Duration::from_secs(10),
        Duration::from_secs(25),
        Duration::from_secs(95),
    )
    .await;
    let secs: Vec<u64> = starts.iter().map(|d| d.as_secs()).collect();
    assert_eq!(secs, [0, 30, 60, 90]);
    // Each poll skipped the two ticks it covered, including the one in
    // flight at shutdown, which was allowed to finish (ticks 100 and 110).
    assert_eq!(stats.skipped_ticks.load(Ordering::Relaxed), 8);
}

#[tokio::test(start_paused = true)]
async fn a_slow_poller_does_not_delay_a_fast_one() {
    let (slow, fast) = tokio::join!(
        drive(
            Duration::from_secs(10),
            Duration::from_secs(60),
            Duration::from_millis(30_500)
        ),
        drive(
            Duration::from_secs(1),
            Duration::from_millis(10),
            Duration::from_millis(30_500)
        ),
    );
    assert_eq!(slow.0.len(), 1);
    let fast_secs: Vec<u64> = fast.0.iter().map(|d| d.as_secs()).collect();
    assert_eq!(fast_secs, (0..=30).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_scheduling_without_waiting_for_the_next_tick() {
    let origin = Instant::now();
    let (stop, shutdown) = watch::channel(false);
    let ticker = Ticker::aligned(Duration::from_secs(3600), Duration::ZERO, origin, 1);
    let task = tokio::spawn(async move {
        let mut job = Recorder {
            origin,
            work: Duration::ZERO,
            starts: Vec::new(),
        };
        run("idle", ticker, Arc::default(), origin, shutdown, &mut job).await
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.send(true).unwrap();
    task.await.unwrap();
    assert!(origin.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stop_sender_ends_the_poller_instead_of_spinning() {
    let origin = Instant::now();
    let (stop, shutdown) = watch::channel(false);
    let ticker = Ticker::aligned(Duration::from_secs(3600), Duration::ZERO, origin, 1);
    let task = tokio::spawn(async move {
        let mut job = Recorder {
            origin,
            work: Duration::ZERO,
            starts: Vec::new(),
        };
        run("orphan", ticker, Arc::default(), origin, shutdown, &mut job).await
    });
    drop(stop);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the poller returns")
        .unwrap();
}

#[test]
fn skipped_ticks_blame_the_poll_only_when_the_poll_was_slow() {
    let interval = Duration::from_secs(10);
    let ms = Duration::from_millis;
    // A 22 ms poll that began 40 s after its tick (the agent was stopped).
    assert_eq!(
        Overrun::cause(ms(40_000), ms(22), interval),
        Overrun::StartedLate
    );
    // A poll that ran 25 s from a tick it began on time.
    assert_eq!(
        Overrun::cause(ms(3), ms(25_000), interval),
        Overrun::SlowPoll
    );
    // Both slow to start and slow to finish: the poll is what to fix.
    assert_eq!(
        Overrun::cause(ms(12_000), ms(15_000), interval),
        Overrun::SlowPoll
    );
    assert!(Overrun::StartedLate.to_string().contains("did not run"));
}
