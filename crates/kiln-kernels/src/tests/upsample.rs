use burn::tensor::{Distribution, Tensor};

use super::*;
use crate::upsample::{SubPixelConv2dConfig, pixel_shuffle, pixel_unshuffle};

#[test]
fn pixel_shuffle_follows_pytorch_channel_order() {
    let device = device();
    let (n, c, r, h, w) = (2, 3, 2, 4, 5);
    let x = Tensor::<TestBackend, 4>::random([n, c * r * r, h, w], Distribution::Normal(0.0, 1.0), &device);
    let y = pixel_shuffle(x.clone(), r).expect("valid");
    assert_eq!(y.dims(), [n, c, h * r, w * r]);
    let (xv, yv) = (to_vec(x.clone()), to_vec(y.clone()));
    for b in 0..n {
        for ch in 0..c {
            for i in 0..r {
                for j in 0..r {
                    for hh in 0..h {
                        for ww in 0..w {
                            let src = ((b * c * r * r + ch * r * r + i * r + j) * h + hh) * w + ww;
                            let dst = ((b * c + ch) * h * r + hh * r + i) * w * r + ww * r + j;
                            assert_eq!(xv[src], yv[dst]);
                        }
                    }
                }
            }
        }
    }
    let back = pixel_unshuffle(y, r).expect("valid");
    assert_eq!(to_vec(back), xv);
    assert!(pixel_shuffle(x, 3).is_err());
}

#[test]
fn icnr_starts_as_nearest_upsampling() {
    let device = device();
    let layer = SubPixelConv2dConfig::new(4, 3, 2).init::<TestBackend>(&device).expect("valid");
    let x = Tensor::<TestBackend, 4>::random([1, 4, 5, 6], Distribution::Normal(0.0, 1.0), &device);
    let y = layer.forward(x);
    assert_eq!(y.dims(), [1, 3, 10, 12]);
    let v = to_vec(y);
    for ch in 0..3 {
        for yy in 0..10 {
            for xx in 0..12 {
                let at = |a: usize, b: usize| v[(ch * 10 + a) * 12 + b];
                let corner = at(yy / 2 * 2, xx / 2 * 2);
                assert!((at(yy, xx) - corner).abs() < 1e-6);
            }
        }
    }
    assert!(SubPixelConv2dConfig::new(4, 3, 0).init::<TestBackend>(&device).is_err());
}
