"""Tiny random models in the real architectures, built offline (DESIGN §6).

They exist so tests, CI and the demo run without weights. Every output made with them is
labelled "tiny random weights": they show the plumbing, not the quality. Sizes follow
``research/editors.md`` §8; tokenizers are built in memory (no hub download).
"""

from __future__ import annotations

import torch

TINY_LABEL = "tiny random weights (no real model: output shows the pipeline, not image quality)"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte gets a printable unicode character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def clip_tokenizer(model_max_length: int = 77):
    """Byte-level CLIP tokenizer with 514 tokens and no merges (one token per character)."""
    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": i + 256 for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = 512
    vocab["<|endoftext|>"] = 513
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=model_max_length)


def t5_tokenizer(model_max_length: int = 512):
    """Character-level T5 (sentencepiece-style unigram) tokenizer, also used for UMT5."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    vocab += [(chr(i), -2.0) for i in range(33, 127)]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=model_max_length)


T5_VOCAB = 3 + 1 + 94


def clip_text_model(seed: int = 0, hidden: int = 32, projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
        hidden_size=hidden,
        intermediate_size=37,
        layer_norm_eps=1e-5,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=514,
        max_position_embeddings=77,
        projection_dim=hidden,
    )
    model = CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)
    return model.eval()


def t5_encoder(seed: int = 0, d_model: int = 32, umt5: bool = False):
    from transformers import T5Config, T5EncoderModel, UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    kwargs = dict(vocab_size=T5_VOCAB, d_model=d_model, d_kv=8, d_ff=37, num_layers=2, num_heads=4, pad_token_id=0, eos_token_id=1)
    model = UMT5EncoderModel(UMT5Config(**kwargs)) if umt5 else T5EncoderModel(T5Config(**kwargs))
    return model.eval()


# --- SD family (eps participants, editors' stand-ins) -----------------------------------------


def sd_unet(seed: int = 0, in_channels: int = 4, cross_attention_dim: int = 32):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=16,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=1,
    ).eval()


def sd_vae(seed: int = 0):
    """kl-f8 layout in miniature: 4 blocks, so 64 px -> 8² latents like the real x8 VAE."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=[4, 4, 4, 4],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        norm_num_groups=2,
        sample_size=64,
    ).eval()


def sd_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1
    )


def sd_components(seed: int = 0) -> dict:
    return {
        "unet": sd_unet(seed),
        "vae": sd_vae(seed + 1),
        "text_encoder": clip_text_model(seed + 2),
        "tokenizer": clip_tokenizer(),
        "scheduler": sd_scheduler(),
        "safety_checker": None,
        "feature_extractor": None,
        "image_encoder": None,
        "requires_safety_checker": False,
    }


# --- Flux ---------------------------------------------------------------------------------------


FLUX_TRANSFORMER = dict(
    patch_size=1,
    in_channels=16,
    num_layers=1,
    num_single_layers=1,
    attention_head_dim=16,
    num_attention_heads=2,
    joint_attention_dim=32,
    pooled_projection_dim=32,
    axes_dims_rope=[4, 4, 8],
)
WAN_TRANSFORMER = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=2,
    attention_head_dim=12,
    in_channels=16,
    out_channels=16,
    text_dim=32,
    freq_dim=256,
    ffn_dim=32,
    num_layers=2,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    rope_max_seq_len=32,
)


def flux_components(seed: int = 0, guidance_embeds: bool = False) -> dict:
    """FLUX.1 layout in miniature; ``guidance_embeds=True`` mimics dev, False schnell."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(**FLUX_TRANSFORMER, guidance_embeds=guidance_embeds).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(
        sample_size=64,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4, 4, 4, 4),
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    ).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096, shift=3.0
    )
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": clip_text_model(seed + 2, projection=False),
        "tokenizer": clip_tokenizer(),
        "text_encoder_2": t5_encoder(seed + 3),
        "tokenizer_2": t5_tokenizer(),
        "scheduler": scheduler,
    }


# --- Wan 2.1 ------------------------------------------------------------------------------------


def wan_components(seed: int = 0) -> dict:
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]).eval()
    torch.manual_seed(seed + 1)
    transformer = WanTransformer3DModel(**WAN_TRANSFORMER).eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": t5_encoder(seed + 2, umt5=True),
        "tokenizer": t5_tokenizer(),
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
    }


def offsets_like(state_dict: dict, seed: int = 0, scale: float = 0.01) -> dict:
    """A random 'delta' with the keys and shapes of ``state_dict`` (stands in for an IC-Light file)."""
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g, dtype=torch.float32).to(v.dtype) * scale for k, v in state_dict.items()}
