"""Default nst_jax settings: every config field, documented.

Run:
  python -m nst_jax.main --config=configs/default.py \
      --config.content=photo.jpg --config.style=painting.jpg \
      --config.output=out/result.png

Hardware configs (cpu.py, gpu.py, tpu.py) import this and override a few
fields; any field can be overridden with --config.FIELD=value.

This is the one place of the defaults: `nst_jax.engine.settings.check`
reads every field from the config and refuses a config that lacks one, so
a config file starts from this one (`from nst_jax.configs import default`)
and a dict passed to `nst_jax.run.run` or `stylize(config=...)` has all of
its fields.
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  # Inputs and output.
  config.content = ''            # content image path
  config.style = ''              # style image path, or several: 'a.jpg,b.jpg'
  config.style_blend_weights = ''  # e.g. '0.7,0.3' (default: equal)
  config.output = 'out/result.png'  # the manifest goes beside it (.json)
  config.weights = 'auto'        # converted file, 'auto' or 'random'
  config.allow_random_weights = False  # weights=auto: fall back to random
                                       # weights (loudly) when none exist

  # Sizes.
  config.image_size = 512        # longest side of the content, pixels
  config.style_scale = 1.0       # style's longest side = image_size * this

  # The loss (see nst_jax/core/losses.py for the formulas).
  config.content_layers = 'conv4_2'
  config.style_layers = 'conv1_1,conv2_1,conv3_1,conv4_1,conv5_1'
  config.style_layer_weights = ''  # '' = 1/|L| each (the paper's w_l)
  config.content_weight = 1.0    # alpha
  # beta. With 'invariant' losses alpha/beta = 1e3 matches the paper's
  # alpha/beta = 1e-3 * 2.1e6 / 1e3, i.e. about 1e-3 at 512 px with conv4_2.
  config.style_weight = 1e-3
  config.tv_weight = 0.0
  config.loss_normalization = 'invariant'  # 'paper' | 'invariant'
  config.pooling = 'avg'         # 'avg' (the paper) | 'max'
  # Beyond the image's edge the convolutions see 'zeros' (VGG as trained; the
  # edge reads as a dark frame) | 'reflect' | 'replicate'.
  config.padding = 'zeros'
  # The style term per layer: 'gram' (the paper) | 'mean_std' (channel means
  # and deviations) | 'mean_cov' (2-Wasserstein between Gaussians) |
  # 'sliced_wasserstein' (sorted random projections); see docs/control.md.
  config.style_loss = 'gram'
  config.sliced_redraw = False   # sliced_wasserstein: new directions every
                                 # step (adam, sgd only; else fixed by seed)

  # Colour: 'none' | 'luminance' (transfer on luminance only, the content's
  # colours kept) | 'histogram' (style recoloured to the content's colour
  # mean and covariance first) | 'original_colors' (the result's luminance
  # with the content's colours, on every image written).
  config.color_control = 'none'
  config.match_luminance = True  # luminance: match each style's luminance
                                 # mean and spread to the content's first
  config.color_transform = 'pca'  # histogram: 'pca' | 'cholesky' | 'sym'

  # Regions (guided Gram matrices): one mask image per style,
  # 'sky.png,ground.png'; white = in the region, grey = partly. Region k
  # takes the k-th style.
  config.content_masks = ''
  config.style_masks = ''        # optional: the part of each style image
                                 # whose statistics count (default: all)
  config.region_weights = ''     # one weight per region (default: equal)

  # Optimisation.
  config.optimizer = 'lbfgs'     # 'lbfgs' | 'lbfgs_nols' | 'adam' | 'sgd'
  # Step size; 0 = the optimiser's own default
  # (optimizers.DEFAULT_LEARNING_RATES: 1 for lbfgs and lbfgs_nols, 10 for
  # adam, 1e3 for sgd with the invariant losses). For lbfgs it is the line search's first trial after the first
  # step (lbfgs_first_step sets the first step's).
  config.learning_rate = 0.0
  config.lbfgs_memory = 100      # curvature pairs L-BFGS keeps (torch's
                                 # history_size; each costs 2 image copies;
                                 # fewer, with a warning, if they do not fit
                                 # the memory)
  # L-BFGS's preconditioner: its initial inverse Hessian smooths over this
  # many levels of an image pyramid (lbfgs.pyramid_preconditioner), so
  # large areas move as readily as pixels. 1 = none, torch.optim.LBFGS's
  # algorithm.
  config.lbfgs_pyramid = 2
  # lbfgs's line search: its first trial moves the most-changed pixel value
  # by this much (0-255) instead of torch's tiny 1/|g|_1 step, which takes
  # several evaluations of extrapolation to grow. 0 = torch's.
  config.lbfgs_first_step = 8.0
  config.iterations = 500
  config.stop_loss = float('-inf')  # stop once the total loss <= this
  config.tolerance = 0.0         # stop when the loss improves < this
                                 # fraction over 20 steps (0: off)
  config.init = 'noise'          # 'noise' | 'content' | 'style' | 'image'
  config.init_image = ''         # for init='image'
  # Coarse to fine: first optimise at image_size / 2^k for k = coarse_to_fine
  # down to 1 (coarse_iterations steps each), upsampling each result as the
  # next start. Evaluations at half size cost a quarter.
  config.coarse_to_fine = 0
  config.coarse_iterations = 100
  config.seed = 0

  # Reporting.
  config.save_every = 0          # write numbered images every N steps (0: off)
  # Steps per compiled chunk: progress, Ctrl-C and save_every act between
  # chunks, so a new value compiles the loop once more (then cached).
  config.log_every = 10
  # Interrupt and resume: the optimisation's whole state is checkpointed
  # beside the output (out/result.ckpt/) on Ctrl-C or SIGTERM and every
  # checkpoint_every steps (at the end of the chunk that reaches it; less
  # often where writing would take over 2% of the run's time; 0: only when
  # interrupted), and removed when the run completes. resume: 'auto' (the same command again
  # continues a checkpoint of the same config, inputs and weights) |
  # 'never' (start over).
  config.checkpoint_every = 100
  config.resume = 'auto'

  # Compute.
  config.dtype = 'float32'       # convolution dtype: 'float32' | 'bfloat16'
  # 'auto': Winograd convolutions on CPU in float32 (fewer multiply-adds
  # per layer; cold compiles take longer), direct elsewhere; or 'direct' |
  # 'winograd'.
  config.conv_algorithm = 'auto'
  # Compilation cache folder, 'auto' (~/.cache/nst_jax/jax) or '' (off);
  # compiled programs are kept beside it in programs/.
  config.compilation_cache = 'auto'
  config.max_memory_gb = 0.0     # refuse sizes estimated to need more (0: the
                                 # device's memory)
  # Images larger than one device's memory, on one device: VGG's early,
  # full-resolution layers run on strips of rows one after another (exact:
  # the same loss and gradient; slower), the rest whole. 0: automatic
  # (strips only when the memory estimate needs them) | N: N strips |
  # 1: never.
  config.row_strips = 0
  # Devices. A sweep's members are split over the devices; shard_rows=True
  # instead splits each image's rows over all devices (one image larger than
  # one device's memory; XLA exchanges the convolutions' border rows and sums
  # the Gram matrices over the shards).
  config.shard_rows = False
  # Several hosts (TPU pods, GPU clusters): call jax.distributed.initialize()
  # first (it finds the cluster from the environment; docs/devices.md), then use
  # the devices of every host. Process 0 writes the outputs.
  config.distributed = False

  # Sweeps: several settings as one compiled program, e.g.
  #   --config.sweep.style_weight='(1e-4,1e-3,1e-2)'
  # Fields given together vary together (equal lengths), or with
  # sweep.product=True in every combination (a grid: the first field's
  # values are the rows). Outputs out/result_<k>.png, out/result_grid.png
  # and one out/result.json.
  config.sweep = ml_collections.ConfigDict()
  config.sweep.content_weight = ()
  config.sweep.style_weight = ()
  config.sweep.tv_weight = ()
  config.sweep.seed = ()
  config.sweep.style = ''        # 'a.jpg,b.jpg': one style per member
  config.sweep.product = False   # every combination of the fields given
  config.sweep.mode = 'auto'     # 'auto' (= 'vmap') | 'map' | 'vmap'
                                 # (see nst_jax/core/descent.py)

  # Video: a content that is a video file (.mp4, .mov, .mkv, .webm, .avi,
  # .gif) or a folder of frames, with output=out/clip.mp4 (or .gif), writes
  # the clip, its frames out/clip/frame_00001.png ... and out/clip.json.
  # Running the same command again continues an interrupted clip.
  config.video = ml_collections.ConfigDict()
  # gamma, the weight of Ruder et al.'s temporal loss (mean over pixel values
  # of certainty * (x - warped previous result)^2, in 0-255 units); 0: off.
  config.video.temporal_weight = 0.3
  # The temporal loss low-passed by a Gaussian of this sigma in pixels (0:
  # Ruder et al.'s loss as published): it holds the coarse picture in place
  # and leaves the finest strokes free for the style term, which keeps
  # painting them where the plain loss holds each frame to the previous
  # result's resampled, stretched texture (a zoom fades to a blur).
  config.video.temporal_blur = 1.0
  config.video.flow = 'dis'      # optical flow: 'dis' | 'farneback' | 'none'
  # Each frame (but the first) starts from: 'warped' (the previous result
  # warped along the flow, video.fill where it is disoccluded) | 'content'
  # | 'noise' (seed + frame index).
  config.video.init = 'warped'
  config.video.long_term = (1,)  # temporal terms against these earlier
                                 # frames, e.g. (1, 10, 20, 40)
  config.video.first_iterations = 0  # steps on the first frame (0: iterations)
  # How the previous result is resampled along the flow for the start and
  # the temporal term: 'bicubic' | 'bilinear' (blurs a little at every frame,
  # which compounds along the clip).
  config.video.warp = 'bicubic'
  # Where the flow is uncertain (content coming into view), a warped start
  # takes 'noise' (white noise, seed + frame index, which the style term
  # paints as it paints a first frame) | 'warped' (the previous result as
  # warped, the frame mirrored at its edges) | 'content' (Ruder et al.; the
  # few steps a frame gets leave it barely stylised).
  config.video.fill = 'noise'
  # 'sequential' (frame after frame) | 'joint' (video.window frames optimised
  # together, the temporal terms coupling neighbours; the window's frames are
  # split over the devices).
  config.video.mode = 'sequential'
  config.video.window = 4
  config.video.fps = 0.0         # output frame rate (0: the source's; a
                                 # folder of frames: 24)
  return config
