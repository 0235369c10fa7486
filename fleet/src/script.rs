//! The Lua scripts the fleet runs in Redis, and the parsing of their answers. Public so that
//! tests (and operators reading what runs in their Redis) can see them; [`Fleet`](crate::Fleet)
//! is the way to use them.

use std::time::Duration;

use egress_core::rt::{CoordinatorError, SlotGrant};

/// GCRA over one key, the core's [`Gcra::lease`](egress_core::Gcra::lease): its
/// `reserve` once per slot, slots after the first only while less than `count` intervals from
/// now (a lease never reaches further ahead than its size at the rate), with Redis's `TIME` as
/// the clock (microseconds).
///
/// KEYS: the theoretical arrival time (`tat`, microseconds since the Unix epoch), the hold.
/// ARGV: interval (µs), tolerance (µs), slots wanted, max wait (µs), and optionally the time
/// to use instead of `TIME` (µs; only tests pass it, to run the script on a chosen timeline).
/// Returns `{hold_left_ms, next_us, slot_us...}`: the hold's `PTTL` (negative: none), the
/// offset of the first slot refused (-1: none), then each reserved slot's offset from now.
///
/// Lua numbers are doubles: microseconds since 1970 (about 1.8e15) are exact below 2^53.
pub const ACQUIRE: &str = r"
local now
if ARGV[5] then
  now = tonumber(ARGV[5])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local count = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local out = {redis.call('PTTL', KEYS[2]), -1}
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then tat = tonumber(stored) end
local horizon = interval * count
local reserved = false
for i = 1, count do
  local slot = tat - tolerance
  if slot < now then slot = now end
  local before = max_wait
  if i > 1 and horizon < before then before = horizon end
  if slot > now and slot - now >= before then
    out[2] = slot - now
    break
  end
  if slot > tat then tat = slot end
  tat = tat + interval
  reserved = true
  out[#out + 1] = slot - now
end
if reserved then
  local value = string.format('%.0f', tat)
  if ARGV[5] then
    -- A chosen timeline has nothing to do with the real time keys expire in.
    redis.call('SET', KEYS[1], value)
  else
    -- Once tat has passed, a missing key means the same as the stored one: expire it then.
    redis.call('SET', KEYS[1], value, 'PX', math.floor((tat - now) / 1000) + 1)
  end
end
return out
";

/// Holds a key for a while, unless a longer hold is in force, and tells the fleet.
///
/// KEYS: the hold (or circuit) key. ARGV: milliseconds, the channel, the message.
/// Returns 1 when the hold was set and published, 0 when a longer one was in force.
pub(crate) const HOLD: &str = r"
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) >= ms then return 0 end
redis.call('SET', KEYS[1], '1', 'PX', ms)
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
";

/// Reads the answer of [`ACQUIRE`] (`asked` slots, `max_wait` as sent), refusing nonsense
/// with a typed error.
pub fn grant(reply: &[i64], asked: u32, max_wait: Duration) -> Result<SlotGrant, CoordinatorError> {
    let bad = |what: &str| {
        Err(CoordinatorError::Protocol(format!(
            "acquire script: {what}"
        )))
    };
    let [hold, next, slots @ ..] = reply else {
        return bad("fewer than two numbers");
    };
    if slots.len() > asked as usize {
        return bad("more slots than asked");
    }
    let micros = |n: i64| Duration::from_micros(n.unsigned_abs());
    let mut out = Vec::with_capacity(slots.len());
    for &slot in slots {
        if slot < 0 || micros(slot) > max_wait || out.last().is_some_and(|l| micros(slot) < *l) {
            return bad("a slot out of order or range");
        }
        out.push(micros(slot));
    }
    let next = match *next {
        -1 => None,
        n if n >= 0 => Some(micros(n)),
        _ => return bad("a negative next slot"),
    };
    if out.is_empty() && next.is_none() {
        return bad("no slot and no next slot");
    }
    let hold = (*hold > 0).then(|| Duration::from_millis(hold.unsigned_abs()));
    Ok(SlotGrant::new(out, next, hold))
}

/// A message on the fleet's channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Message<'a> {
    /// `h|<ms>|<reason>|<key>`: `key` is held for `ms`.
    Hold {
        key: &'a str,
        left: Duration,
        quota: bool,
    },
    /// `c|<ms>|<key>`: the circuit of `key` opened for `ms`.
    Circuit { key: &'a str, left: Duration },
}

impl Message<'_> {
    pub(crate) fn encode(&self) -> String {
        match self {
            Message::Hold { key, left, quota } => {
                let reason = if *quota { "q" } else { "r" };
                format!("h|{}|{reason}|{key}", left.as_millis())
            }
            Message::Circuit { key, left } => format!("c|{}|{key}", left.as_millis()),
        }
    }
}

/// Reads a message; `None` for anything else (never panics on any input).
pub(crate) fn parse(text: &str) -> Option<Message<'_>> {
    let (kind, rest) = text.split_once('|')?;
    let (ms, rest) = rest.split_once('|')?;
    let left = Duration::from_millis(ms.parse().ok()?);
    match kind {
        "h" => {
            let (reason, key) = rest.split_once('|')?;
            let quota = match reason {
                "q" => true,
                "r" => false,
                _ => return None,
            };
            Some(Message::Hold { key, left, quota })
        }
        "c" => Some(Message::Circuit { key: rest, left }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_back_as_written_and_garbage_is_ignored() {
        let hold = Message::Hold {
            key: "api|x",
            left: Duration::from_millis(2000),
            quota: false,
        };
        assert_eq!(parse(&hold.encode()), Some(hold));
        let circuit = Message::Circuit {
            key: "k",
            left: Duration::from_millis(5),
        };
        assert_eq!(parse(&circuit.encode()), Some(circuit));
        for junk in ["", "h", "h|x|r|k", "h|1|z|k", "x|1|k", "h|1", "c|-1|k"] {
            assert_eq!(parse(junk), None, "{junk}");
        }
    }

    #[test]
    fn a_script_answer_out_of_range_is_a_typed_error_not_a_panic() {
        let w = Duration::from_secs(1);
        assert!(grant(&[], 1, w).is_err());
        assert!(grant(&[-2, -1], 1, w).is_err());
        assert!(grant(&[-2, -1, 5, 6], 1, w).is_err());
        assert!(grant(&[-2, -1, 2_000_000], 1, w).is_err());
        assert!(grant(&[-2, -1, 50, 10], 2, w).is_err());
        assert!(grant(&[-2, -7], 1, w).is_err());
        let ok = grant(&[1500, 900_000, 0, 100], 3, w).unwrap();
        assert_eq!(ok.slots, vec![Duration::ZERO, Duration::from_micros(100)]);
        assert_eq!(ok.next, Some(Duration::from_micros(900_000)));
        assert_eq!(ok.hold, Some(Duration::from_millis(1500)));
    }
}
