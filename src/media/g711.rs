//! G.711 (ITU-T G.711): 16-bit linear PCM to and from µ-law (PCMU, RTP
//! payload type 0) and A-law (PCMA, payload type 8), for prompts, music
//! and mixing.

const SEG_UEND: [i32; 8] = [0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF];
const SEG_AEND: [i32; 8] = [0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF];

fn segment(v: i32, ends: &[i32; 8]) -> usize {
    ends.iter().position(|&e| v <= e).unwrap_or(8)
}

pub fn linear_to_ulaw(sample: i16) -> u8 {
    let mut v = i32::from(sample) >> 2;
    let mask = if v < 0 {
        v = -v;
        0x7F
    } else {
        0xFF
    };
    v = v.min(8159) + (0x84 >> 2);
    let seg = segment(v, &SEG_UEND);
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let u = ((seg as i32) << 4) | ((v >> (seg + 1)) & 0x0F);
    (u ^ mask) as u8
}

pub fn linear_to_alaw(sample: i16) -> u8 {
    let mut v = i32::from(sample) >> 3;
    let mask = if v >= 0 {
        0xD5
    } else {
        v = -v - 1;
        0x55
    };
    let seg = segment(v, &SEG_AEND);
    if seg >= 8 {
        return (0x7F ^ mask) as u8;
    }
    let mut a = (seg as i32) << 4;
    a |= if seg < 2 { (v >> 1) & 0x0F } else { (v >> seg) & 0x0F };
    (a ^ mask) as u8
}

pub fn ulaw_to_linear(code: u8) -> i16 {
    let u = !code;
    let exponent = (u >> 4) & 0x07;
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if u & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

pub fn alaw_to_linear(code: u8) -> i16 {
    let a = code ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = i32::from(a & 0x0F);
    let magnitude = match exponent {
        0 => (mantissa << 4) + 8,
        e => ((mantissa << 4) + 0x108) << (e - 1),
    };
    (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_inverts_encoding_within_a_step() {
        for s in (-32000i32..32000).step_by(97) {
            let s = s as i16;
            let u = ulaw_to_linear(linear_to_ulaw(s));
            let a = alaw_to_linear(linear_to_alaw(s));
            // G.711 steps grow with the magnitude: 1/16 of it at most, plus the smallest step.
            let tolerance = (i32::from(s).abs() / 16 + 16) as i16;
            assert!((u - s).abs() <= tolerance, "ulaw {s} -> {u}");
            assert!((a - s).abs() <= tolerance, "alaw {s} -> {a}");
        }
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert!(alaw_to_linear(0xD5).abs() <= 8);
    }

    #[test]
    fn known_codes() {
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_ulaw(-1), 0x7E);
        assert_eq!(linear_to_ulaw(i16::MAX), 0x80);
        assert_eq!(linear_to_ulaw(i16::MIN), 0x00);
        assert_eq!(linear_to_alaw(0), 0xD5);
        assert_eq!(linear_to_alaw(i16::MAX), 0xAA);
        assert_eq!(linear_to_alaw(i16::MIN), 0x2A);
    }

    #[test]
    fn monotonic_in_magnitude() {
        // Larger positive samples never map to a smaller µ-law magnitude.
        let mag = |s: i16| 0x7F - (linear_to_ulaw(s) & 0x7F);
        let mut prev = 0;
        for s in (0..i16::MAX).step_by(97) {
            assert!(mag(s) >= prev);
            prev = mag(s);
        }
    }
}
