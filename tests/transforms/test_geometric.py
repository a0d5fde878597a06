"""Geometric transforms against scipy.ndimage (float64) and OpenCV conventions."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage as ndi

from aigc_jax.transforms import geometric as g, sampling

SCIPY_MODE = {"constant": "grid-constant", "edge": "nearest", "reflect": "mirror",
              "symmetric": "reflect", "wrap": "grid-wrap"}
CV_MODE = {"constant": cv2.BORDER_CONSTANT, "edge": cv2.BORDER_REPLICATE, "reflect": cv2.BORDER_REFLECT_101,
           "symmetric": cv2.BORDER_REFLECT, "wrap": cv2.BORDER_WRAP}
CV_ORDER = {0: cv2.INTER_NEAREST, 1: cv2.INTER_LINEAR, 3: cv2.INTER_CUBIC}
CVAL = 0.3


def _images(shape, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


def _random_matrices(n, h, w, seed):
  """Generic maps (no tie coordinates) that send part of the image out of range, some far out."""
  rng = np.random.default_rng(seed)
  m = np.zeros((n, 2, 3))
  # Well conditioned, so that float32 source coordinates stay accurate.
  m[:, :, :2] = np.eye(2) + rng.uniform(-0.3, 0.3, (n, 2, 2))
  m[:, 0, 2] = rng.uniform(-2 * w, 2 * w, n)
  m[:, 1, 2] = rng.uniform(-2 * h, 2 * h, n)
  return m


def _scipy_warp(img, m, order, mode):
  h, w, c = img.shape
  inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))
  ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
  sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
  sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
  return np.stack([ndi.map_coordinates(img[..., ch].astype(np.float64), [sy, sx], order=order,
                                       mode=SCIPY_MODE[mode], cval=CVAL) for ch in range(c)], -1)


@pytest.mark.parametrize("shape", [(7, 10, 3), (8, 5, 1)])  # odd/even, non-square, C = 3 and 1
@pytest.mark.parametrize("order", [0, 1])
def test_warp_affine_matches_scipy_float64(shape, order):
  imgs = _images((4,) + shape)
  m = _random_matrices(4, shape[0], shape[1], seed=sum(shape) + order)
  for mode in SCIPY_MODE:
    out = np.asarray(g.warp_affine(jnp.asarray(imgs), jnp.asarray(m, jnp.float32), order=order, mode=mode,
                                   cval=CVAL))
    ref = np.stack([_scipy_warp(imgs[i], m[i], order, mode) for i in range(4)])
    np.testing.assert_allclose(out, ref, atol=1e-5, err_msg=mode)


def _cv_warp(img, m, order, mode):
  return cv2.warpAffine(img, m, (img.shape[1], img.shape[0]), flags=CV_ORDER[order], borderMode=CV_MODE[mode],
                        borderValue=(CVAL,) * 4)


@pytest.mark.parametrize("order", [0, 1, 3])
@pytest.mark.parametrize("mode", list(CV_MODE))
def test_warp_affine_matches_opencv_on_its_grid(order, mode):
  # Shifts and scales by multiples of 1/32 px are exact in OpenCV's fixed point,
  # so every border mode (also far outside the image) must agree to float error.
  img = _images((9, 12, 3), seed=1)
  for m in ([[1, 0, 2.25], [0, 1, -3.125]], [[1, 0, -20.25], [0, 1, 13.75]], [[0.5, 0, 1.25], [0, 2, -0.5]]):
    m = np.asarray(m, np.float64)
    out = np.asarray(g.warp_affine(jnp.asarray(img[None]), jnp.asarray(m, jnp.float32), order=order, mode=mode,
                                   cval=CVAL))[0]
    ref = _cv_warp(img, m, order, mode)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-5, err_msg=str(m))


@pytest.mark.parametrize("order", [1, 3])
def test_rotation_and_scale_match_opencv(order):
  img = _images((9, 12, 3), seed=2)  # The shape of the test above: no recompiles.
  for angle, center, scale in [(33.0, (4.3, 3.1), 1.2), (-71.0, (6.5, 5.0), 0.8)]:
    m = cv2.getRotationMatrix2D(center, angle, scale)
    np.testing.assert_allclose(np.asarray(g.rotation_matrix(angle, center, scale)), m, atol=1e-5)
    for mode in CV_MODE:
      out = np.asarray(g.warp_affine(jnp.asarray(img[None]), jnp.asarray(m, jnp.float32), order=order,
                                     mode=mode, cval=CVAL))[0]
      # OpenCV quantises source coordinates to 1/32 px.
      np.testing.assert_allclose(out, _cv_warp(img, m, order, mode), atol=0.15, err_msg=mode)
      assert np.mean(np.abs(out - _cv_warp(img, m, order, mode))) < 0.01


def test_rotation_direction_and_centre_are_exact():
  img = _images((1, 7, 7, 2), seed=3)
  m = g.rotation_matrix(90.0, (3.0, 3.0))
  for order in (0, 1, 3):
    out = np.asarray(g.warp_affine(jnp.asarray(img), m, order=order))
    # Counter-clockwise on screen is np.rot90 on (row, col) arrays.
    np.testing.assert_allclose(out[0], np.rot90(img[0]), atol=1e-5)
    np.testing.assert_allclose(out[0], _cv_warp(img[0], np.asarray(m, np.float64), order, "constant"), atol=1e-5)


def test_flips_match_affine_maps():
  img = jnp.asarray(_images((2, 5, 6, 3), seed=4))
  np.testing.assert_allclose(g.hflip(img), g.warp_affine(img, jnp.asarray([[-1.0, 0, 5], [0, 1, 0]])), atol=1e-6)
  np.testing.assert_allclose(g.vflip(img), g.warp_affine(img, jnp.asarray([[1.0, 0, 0], [0, -1, 4]])), atol=1e-6)
  np.testing.assert_array_equal(g.hflip(img), img[:, :, ::-1])


def test_compose_and_invert():
  a = g.rotation_matrix(20.0, (3.0, 4.0), 1.3)
  b = g.translation_matrix(2.0, -1.0)
  c = g.shear_matrix(10.0, -5.0, (1.0, 2.0))
  ab = g.compose_affine(a, b, c)
  p = np.array([1.5, -2.0, 1.0])
  step = lambda m, q: np.append(np.asarray(m) @ q, 1.0)
  np.testing.assert_allclose(np.asarray(ab) @ p, step(c, step(b, step(a, p)))[:2], atol=1e-5)
  np.testing.assert_allclose(g.compose_affine(ab, g.invert_affine(ab)), np.eye(3)[:2], atol=1e-5)
  np.testing.assert_allclose(g.scale_matrix(2.0, 3.0, (1.0, 1.0)) @ np.array([1.0, 1.0, 1.0]), [1.0, 1.0])


def test_warp_perspective_matches_opencv():
  img = _images((10, 13, 3), seed=5)
  src = np.array([[0, 0], [12, 0], [12, 9], [0, 9]], np.float32)
  dst = src + np.array([[1.5, 0.7], [-2.1, 1.0], [0.4, -1.8], [1.2, 0.3]], np.float32)
  hom = g.homography_from_points(jnp.asarray(src), jnp.asarray(dst))
  np.testing.assert_allclose(hom, cv2.getPerspectiveTransform(src, dst), atol=1e-4)
  for mode in CV_MODE:
    out = np.asarray(g.warp_perspective(jnp.asarray(img[None]), hom, mode=mode, cval=CVAL))[0]
    ref = cv2.warpPerspective(img, np.asarray(hom, np.float64), (13, 10), flags=cv2.INTER_LINEAR,
                              borderMode=CV_MODE[mode], borderValue=(CVAL,) * 4)
    np.testing.assert_allclose(out, ref, atol=0.15, err_msg=mode)
    assert np.mean(np.abs(out - ref)) < 0.01


def test_jit_vmap_and_dtypes():
  imgs = jnp.asarray(_images((3, 6, 7, 2), seed=6))
  m = jnp.asarray(_random_matrices(3, 6, 7, seed=7) * [1, 1, 0.2], jnp.float32)
  for order in (0, 1, 3):
    eager = g.warp_affine(imgs, m, order=order, mode="reflect")
    jitted = jax.jit(lambda x, mm: g.warp_affine(x, mm, order=order, mode="reflect"))(imgs, m)
    np.testing.assert_allclose(eager, jitted, atol=1e-5)
    mapped = jax.vmap(lambda x, mm: g.warp_affine(x[None], mm, order=order, mode="reflect")[0])(imgs, m)
    loop = jnp.stack([g.warp_affine(imgs[i:i + 1], m[i], order=order, mode="reflect")[0] for i in range(3)])
    np.testing.assert_allclose(mapped, loop, atol=1e-5)
    np.testing.assert_allclose(mapped, eager, atol=1e-5)
  bf = g.warp_affine(imgs.astype(jnp.bfloat16), m)
  assert bf.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(bf, np.float32), g.warp_affine(imgs, m), atol=0.02)


def _central_difference(f, theta, eps=1e-3):
  f = jax.jit(f)
  theta = np.asarray(theta, np.float32)
  grads = []
  for i in range(theta.size):
    e = np.zeros_like(theta)
    e.flat[i] = eps
    grads.append((float(f(jnp.asarray(theta + e))) - float(f(jnp.asarray(theta - e)))) / (2 * eps))
  return np.asarray(grads).reshape(theta.shape)


@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize("at_identity", [True, False])
def test_gradient_wrt_transform_parameters(order, at_identity):
  img = jnp.asarray(_images((1, 6, 7, 2), seed=8))
  weights = jnp.asarray(_images((1, 6, 7, 2), seed=9))

  def loss(theta):  # rotation angle (deg), scale, tx, ty
    m = g.compose_affine(g.rotation_matrix(theta[0], (3.0, 2.5), theta[1]), g.translation_matrix(theta[2], theta[3]))
    return jnp.sum(weights * g.warp_affine(img, m, order=order, mode="reflect"))

  theta = np.array([0.0, 1.0, 0.0, 0.0] if at_identity else [7.3, 1.07, 0.31, -0.42], np.float32)
  grad = np.asarray(jax.grad(loss)(jnp.asarray(theta)))
  fd = _central_difference(loss, theta)
  np.testing.assert_allclose(grad, fd, rtol=2e-2, atol=2e-2)
  assert np.all(np.abs(grad[2:]) > 1e-2)  # A zero gradient at the identity is the classic bug.


def test_gradient_wrt_images_is_the_transposed_warp():
  img = jnp.asarray(_images((2, 5, 6, 3), seed=10))
  cot = jnp.asarray(_images((2, 5, 6, 3), seed=11))
  m = jnp.asarray(_random_matrices(2, 5, 6, seed=12) * [1, 1, 0.1], jnp.float32)
  for order in (0, 1, 3):
    warp = lambda x: g.warp_affine(x, m, order=order, mode="symmetric")
    grad = jax.grad(lambda x: jnp.sum(cot * warp(x)))(img)
    # Linear in the image: <cot, W x> == <W^T cot, x> for every x.
    probe = jnp.asarray(_images((2, 5, 6, 3), seed=13))
    np.testing.assert_allclose(jnp.sum(grad * probe), jnp.sum(cot * warp(probe)), rtol=1e-4)
    fd = _central_difference(lambda t: jnp.sum(cot * warp(img + t * probe)), np.zeros(1, np.float32))
    np.testing.assert_allclose(fd[0], jnp.sum(grad * probe), rtol=1e-2)


def test_cpu_batch_chunks_give_the_one_pass_warp_and_gradient(monkeypatch):
  imgs = jnp.asarray(_images((5, 7, 6, 2), seed=14))
  cot = jnp.asarray(_images((5, 7, 6, 2), seed=15))
  m = _random_matrices(5, 7, 6, seed=16)
  warp = lambda x: g.warp_affine(x, jnp.asarray(m, jnp.float32), mode="reflect")

  def run():
    jax.clear_caches()  # the chunk size is read when the warp is traced
    scans = "scan" in str(jax.make_jaxpr(warp)(imgs))
    return scans, warp(imgs), jax.grad(lambda x: jnp.sum(cot * warp(x)))(imgs)

  one_pass = run()
  monkeypatch.setattr(sampling, "_CPU_ONE_PASS_VALUES", 0)
  monkeypatch.setattr(sampling, "_CPU_CHUNK_VALUES", 1)  # two images per chunk: 2 + 2 + 1
  chunked = run()
  jax.clear_caches()
  assert chunked[0] and not one_pass[0]
  ref = np.stack([_scipy_warp(np.asarray(imgs[i]), m[i], 1, "reflect") for i in range(5)])
  np.testing.assert_allclose(chunked[1], ref, atol=1e-5)
  np.testing.assert_allclose(chunked[2], one_pass[2], atol=1e-6)


def test_random_ops_keys_and_per_example_parameters():
  img = jnp.broadcast_to(jnp.asarray(_images((1, 8, 8, 1), seed=14)), (4, 8, 8, 1))
  key = jax.random.key(0)
  for op in (g.random_affine, g.random_perspective, g.elastic, g.random_crop_resize):
    a, b = op(key, img), op(key, img)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], a[1]), op.__name__
    assert not np.allclose(a, op(jax.random.key(1), img)), op.__name__
  flips = g.random_flip(key, img, horizontal=0.5)
  assert all(np.allclose(f, img[0]) or np.allclose(f, img[0, :, ::-1]) for f in flips)


def test_degenerate_ranges_are_identity():
  img = jnp.asarray(_images((4, 8, 8, 1), seed=15))  # The shape of the test above: no recompiles.
  key = jax.random.key(3)
  same = g.random_affine(key, img, rotate=(0, 0), scale=(1, 1), translate=(0, 0), shear=(0, 0))
  np.testing.assert_allclose(same, img, atol=1e-5)
  np.testing.assert_allclose(g.random_crop_resize(key, img, scale=(1, 1), ratio=(1, 1)), img, atol=1e-5)
  np.testing.assert_allclose(g.elastic(key, img, alpha=0.0), img, atol=1e-6)


def test_perspective_of_one_pixel_wide_images_is_finite():
  # The corners it moves are the image's outer edges, a rectangle even when the image is one pixel.
  key = jax.random.key(4)
  for shape in ((3, 1, 1, 2), (3, 5, 1, 1)):
    img = jnp.asarray(_images(shape, seed=16))
    out = np.asarray(g.random_perspective(key, img, distortion=1.0, mode="edge"))
    assert np.isfinite(out).all(), shape
    np.testing.assert_allclose(g.random_perspective(key, img, distortion=0.0), img, atol=1e-5)


def test_elastic_alpha_is_rms_displacement():
  # A horizontal ramp turns x displacements into value changes one for one.
  ramp = jnp.broadcast_to(jnp.arange(64, dtype=jnp.float32)[None, None, :, None], (8, 64, 64, 1))
  out = g.elastic(jax.random.key(0), ramp, alpha=1.5, sigma=3.0, mode="edge")
  inner = np.asarray(out - ramp)[:, 8:-8, 8:-8]
  assert 1.0 < np.sqrt(np.mean(inner ** 2)) < 2.0
