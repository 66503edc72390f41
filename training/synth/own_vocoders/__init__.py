"""Neural vocoders that the project trains itself, on the genuine speech, on the CPU.

The pretrained vocoders in ``neural_vocoder.py`` are all HiFi-GAN; copy-synthesis spoofs
transfer to unseen systems because they cover many vocoder *architectures* (Wang & Yamagishi,
ICASSP 2023), so these add architectures that make the waveform differently:

* ``vocos`` (``vocos.py``): a ConvNeXt backbone on the log-mel predicts STFT magnitude and
  phase, and the waveform comes from an inverse STFT (Siuzdak 2023, "Vocos").
* ``melgan`` (``melgan.py``): transposed-convolution upsampling with dilated residual stacks
  in the time domain (Kumar et al. 2019, "MelGAN").

Both are trained adversarially (``discriminator.py``, ``losses.py``) by
``python -m training.synth.train_vocoder`` (``trainer.py``) on train-split speakers only, and
used by the corpus builder as ``vocos-ours`` and ``melgan-ours`` (``generators.py``) from the
weights in ``training/synth/weights/<name>/``.
"""
