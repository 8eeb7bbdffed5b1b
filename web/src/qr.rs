//! The QR code the page shows beside a code it sends: the page's own link with the code in
//! its fragment, so a phone that scans it opens this relay's page and receives. Drawn as
//! SVG by the `qrcode` crate (the one the CLI draws with), shown as a `data:` image (the
//! page's policy allows no other source).

use qrcode::{EcLevel, QrCode, render::svg};

/// Pixels per module in the drawing.
const MODULE_PX: u32 = 6;

/// The QR code of `text` as an SVG document, or why it cannot be drawn.
pub fn svg(text: &str) -> Result<String, String> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
        .map_err(|e| format!("cannot draw a QR code: {e}"))?;
    Ok(code
        .render::<svg::Color<'_>>()
        .quiet_zone(true)
        .module_dimensions(MODULE_PX, MODULE_PX)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes what `svg` drew (its path of unit squares) with an independent decoder.
    fn decode(svg: &str) -> String {
        let size: usize = svg
            .split("width=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .and_then(|s| s.parse().ok())
            .expect("the drawing's width");
        let path = svg
            .split(" d=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("the drawing's path");
        // The renderer writes each dark run as `M{x} {y}h{w}v{h}H{x}V{y}`.
        let mut dark = vec![false; size * size];
        for part in path.split('M').filter(|p| !p.is_empty()) {
            let nums: Vec<i64> = part
                .split(|c: char| !c.is_ascii_digit() && c != '-')
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().expect("a number"))
                .collect();
            let [x, y, w, h, ..] = nums[..] else {
                panic!("a run: {part}");
            };
            for yy in y..y + h {
                for xx in x..x + w {
                    dark[yy as usize * size + xx as usize] = true;
                }
            }
        }
        let mut img =
            rqrr::PreparedImage::prepare_from_greyscale(
                size,
                size,
                |x, y| {
                    if dark[y * size + x] { 0 } else { 255 }
                },
            );
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code in the drawing");
        grids[0].decode().expect("it decodes").1
    }

    #[test]
    fn the_drawing_decodes_to_the_link() {
        let link = "https://relay.example:8443/convey/#7-purple-otter-canyon";
        let drawn = svg(link).expect("drawn");
        assert!(drawn.starts_with("<?xml") && drawn.contains("<svg"), "{drawn}");
        assert_eq!(decode(&drawn), link);
    }

    #[test]
    fn text_too_long_for_a_qr_code_is_an_error_not_a_panic() {
        let err = svg(&"x".repeat(5000)).expect_err("too long");
        assert!(err.starts_with("cannot draw a QR code"), "{err}");
    }
}
