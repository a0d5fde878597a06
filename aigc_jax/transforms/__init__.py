"""Rule-based image generation: geometric transforms, noise mapping and their composition.

Every op is a pure, jittable, differentiable function over float NHWC batches;
random ops take their key first (`op(key, images, ...)`) and draw per-example
parameters. `parse_spec` turns a spec string into such an op.
"""

from aigc_jax.transforms.compose import identity, random_choice, sequential, with_probability
from aigc_jax.transforms.geometric import (compose_affine, crop_matrix, elastic, gaussian_blur, hflip,
                                           homography_from_points, invert_affine, random_affine,
                                           random_affine_matrices, random_crop_resize, random_flip,
                                           random_perspective, rotation_matrix, scale_matrix, shear_matrix,
                                           translation_matrix, vflip, warp_affine, warp_perspective)
from aigc_jax.transforms.noise import (PALETTES, TEXTURES, blend_texture, colormap, fbm, fbm_warp, gaussian_noise,
                                       palette, perlin, random_palettes, random_textures, salt_pepper, speckle,
                                       texture, uniform_noise, value_noise)
from aigc_jax.transforms.sampling import sample
from aigc_jax.transforms.spec import OPS, noise_images, parse_spec, rule_images, valid_ops
