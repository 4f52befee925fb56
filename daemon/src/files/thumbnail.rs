//! Previews of image attachments, made by the server with the `image` crate under limits
//! that a decompression bomb cannot pass: the header's dimensions are checked before
//! any pixel is decoded, and the decoder may allocate only so much.

use std::io::{BufRead, Seek};

use image::{ImageFormat, ImageReader, Limits};

use legalchat_protocol::pb;

/// Widest and highest preview.
pub const MAX_SIDE: u32 = 256;
/// Largest encoded preview (it travels inside messages).
pub const MAX_BYTES: usize = 16 * 1024;
/// Largest width or height of an image that gets a preview.
pub const MAX_DIMENSION: u32 = 12_000;
/// Most memory the decoder may take for one image.
pub const MAX_DECODE_BYTES: u64 = 192 * 1024 * 1024;

/// A JPEG preview of an image of type `mime`, or `None` (not an image type, beyond the
/// limits, or undecodable: the file is still stored, only without a preview).
pub fn make(reader: impl BufRead + Seek, mime: &str) -> Option<pb::Thumbnail> {
    let format = match mime {
        "image/png" => ImageFormat::Png,
        "image/jpeg" => ImageFormat::Jpeg,
        "image/gif" => ImageFormat::Gif,
        "image/webp" => ImageFormat::WebP,
        _ => return None,
    };
    let mut decoder = ImageReader::with_format(reader, format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_DIMENSION);
    limits.max_image_height = Some(MAX_DIMENSION);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    decoder.limits(limits);
    let image = match decoder.decode() {
        Ok(image) => image,
        Err(e) => {
            tracing::info!(error = %e, mime, "no preview for an image");
            return None;
        }
    };
    // Never larger than the image itself.
    let own = image.width().max(image.height());
    for (side, quality) in [(MAX_SIDE, 75), (160, 60), (96, 50)] {
        let side = side.min(own);
        let small = image.thumbnail(side, side).to_rgb8();
        let mut data = Vec::new();
        if image::codecs::jpeg::JpegEncoder::new_with_quality(&mut data, quality).encode_image(&small).is_err() {
            return None;
        }
        if data.len() <= MAX_BYTES {
            return Some(pb::Thumbnail { mime_type: "image/jpeg".into(), data, width: small.width(), height: small.height() });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x.to_le_bytes()[0], y.to_le_bytes()[0], 128]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn previews_fit_their_bounds() {
        let t = make(Cursor::new(png(1200, 600)), "image/png").unwrap();
        assert_eq!((t.width, t.height), (256, 128));
        assert!(t.data.len() <= MAX_BYTES);
        assert_eq!(t.mime_type, "image/jpeg");
        let decoded = image::load_from_memory(&t.data).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (256, 128));
        assert!(make(Cursor::new(png(10, 10)), "application/pdf").is_none());
        let small = make(Cursor::new(png(120, 40)), "image/png").unwrap();
        assert_eq!((small.width, small.height), (120, 40), "a small image is not enlarged");
        assert!(make(Cursor::new(b"not an image".to_vec()), "image/png").is_none());
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        // A valid PNG header announcing 60,000 × 60,000 pixels (10.8 GB decoded), then
        // nothing: the decoder must refuse it before allocating.
        let mut bomb = png(1, 1);
        // IHDR's width and height follow the 8-byte signature, the chunk length and type.
        bomb[16..20].copy_from_slice(&60_000u32.to_be_bytes());
        bomb[20..24].copy_from_slice(&60_000u32.to_be_bytes());
        // Fix the IHDR CRC so that only the limits can refuse it.
        let crc = crc32(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        assert!(make(Cursor::new(bomb), "image/png").is_none());
    }

    #[test]
    fn images_beyond_the_dimension_limit_get_no_preview() {
        // Both decode in a few megabytes; only the limit tells them apart.
        assert!(make(Cursor::new(png(MAX_DIMENSION, 2)), "image/png").is_some());
        assert!(make(Cursor::new(png(MAX_DIMENSION + 1, 2)), "image/png").is_none());
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
}
