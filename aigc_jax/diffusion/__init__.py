"""Diffusion and flow matching: training objectives, samplers and classifier-free guidance.

`objectives` holds the losses and the model views (EDM's denoiser, flow's velocity, DDPM's
epsilon), `samplers` the jitted-loop samplers over those views, `guidance` label dropout and
guided evaluation. The family that trains a U-Net with them is `aigc_jax.trainers.diffusion`.
"""
