"""Random-weight stand-ins for the pretrained models the paper uses, saved where `aras` looks for real ones.

One home for every test that walks a model-loading path: tiny transformers folders built from configs (a chat LM, a
LLaVA-style VLM, CLIP, DINOv2), and full-size random state dicts for the files loaded by architecture (FID's
Inception-v3, VGG19 for the SPADE perceptual loss, LPIPS' torchvision backbone, an smp encoder). Nothing is downloaded;
none of these models means anything, so a run made with them tests code paths, never numbers.
"""
import json
from pathlib import Path

import torch

import aras.captioning as K
from aras.landcover import CLASSES

CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{% if m['content'] is string %}{{ m['content'] }}{% else %}"
        "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
        "{% endif %}</s>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
CORPUS = [K.SYSTEM_PROMPT, K.TEXT_PROMPT, K.VISION_PROMPT, K.HYBRID_PROMPT, ", ".join(CLASSES),
          "0123456789 (%). forest cropland water built-up area"]


def tokenizer():
    "A small byte-level BPE tokenizer with a chat template and an image token, trained here (no download)."
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer, tk.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                           special_tokens=["<pad>", "<s>", "</s>", "<image>", "<|user|>", "<|assistant|>", "<|system|>"]))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                  extra_special_tokens={"image_token": "<image>"})
    tok.chat_template = CHAT
    return tok


def llama_config(vocab):
    from transformers import LlamaConfig
    return LlamaConfig(vocab_size=vocab, **TOWER, num_key_value_heads=2, max_position_embeddings=1024, pad_token_id=0,
                       bos_token_id=1, eos_token_id=2)


TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)   # every tiny transformer
VISION = dict(TOWER, image_size=32, patch_size=8)                                                 # 32 px, 16 patches


def image_processor():
    from transformers import CLIPImageProcessor
    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def save(model_cls, cfg, d, *extras) -> Path:
    "A model of `cfg` with seeded random weights, and its tokenizer or processor, saved as a transformers folder `d`."
    torch.manual_seed(0)
    model_cls(cfg).save_pretrained(d)
    for e in extras: e.save_pretrained(d)
    return Path(d)


def save_tiny_lm(d) -> Path:
    "A tiny random chat causal LM saved as a transformers folder (stands in for Qwen3-4B)."
    from transformers import LlamaForCausalLM
    tok = tokenizer()
    return save(LlamaForCausalLM, llama_config(len(tok)), d, tok)


def save_tiny_vlm(d) -> Path:
    "A tiny random LLaVA (CLIP vision tower + Llama) with its processor, saved as a folder (stands in for Gemma3/Qwen3-VL)."
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    tok = tokenizer()
    proc = LlavaProcessor(image_processor=image_processor(), tokenizer=tok, patch_size=8, vision_feature_select_strategy="default",
                          chat_template=CHAT, num_additional_image_tokens=1)
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(**VISION),
                      text_config=llama_config(len(tok)), image_token_id=tok.convert_tokens_to_ids("<image>"),
                      vision_feature_layer=-1, vision_feature_select_strategy="default")
    return save(LlavaForConditionalGeneration, cfg, d, proc)


def save_tiny_clip(d) -> Path:
    "A tiny random CLIP with its processor (a character-level CLIP tokenizer), saved as a folder."
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz0123456789%().,-":
        vocab[ch] = len(vocab); vocab[ch + "</w>"] = len(vocab)
    tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    proc = CLIPProcessor(image_processor=image_processor(), tokenizer=tok)
    cfg = CLIPConfig(text_config=dict(TOWER, vocab_size=len(vocab), max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                                      pad_token_id=1), vision_config=VISION, projection_dim=16)
    return save(CLIPModel, cfg, d, proc)


def save_tiny_dinov2(d) -> Path:
    "A tiny random DINOv2 (no processor: `aras` resizes and normalises itself)."
    from transformers import Dinov2Config, Dinov2Model
    return save(Dinov2Model, Dinov2Config(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                          image_size=28, patch_size=14), d)


def save_random_inception(folder) -> Path:
    "torch-fidelity's FID Inception-v3 with random weights, under the file name FID's weights have."
    from unittest import mock
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    import aras.metrics as M
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None), \
         mock.patch("torch.load", lambda *a, **k: {}):
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="unused")
    f = Path(folder) / M.INCEPTION_FILE
    f.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), f)
    return f


def save_random_torchvision(name: str, path) -> Path:
    "A torchvision classifier's random state dict (e.g. `vgg19` for the perceptual loss, `vgg16` for LPIPS)."
    import torchvision
    torch.manual_seed(0)
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(getattr(torchvision.models, name)().state_dict(), path)
    return path


def save_random_lpips_backbone(torch_home, net: str = "vgg") -> Path:
    "LPIPS' torchvision backbone with random weights, where torch's hub cache keeps the ImageNet file."
    import torchvision.models as tvm
    import aras.metrics as M
    url = getattr(tvm, M.LPIPS_BACKBONES[net]).IMAGENET1K_V1.url
    arch = {"vgg": "vgg16", "alex": "alexnet", "squeeze": "squeezenet1_1"}[net]
    return save_random_torchvision(arch, Path(torch_home) / "hub" / "checkpoints" / url.rsplit("/", 1)[-1])


def save_random_encoder(folder, encoder: str, weights: str = "imagenet") -> Path:
    "An smp encoder's random state dict under the name `segmentation.load_encoder_weights` looks for."
    from safetensors.torch import save_file
    from aras.segmentation import build_model
    torch.manual_seed(0)
    sd = build_model("Unet", encoder).encoder.state_dict()
    f = Path(folder) / f"{encoder}.{weights}.safetensors"
    f.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, f)
    return f


def paper_weights(folder, torch_home) -> dict:
    """Every pretrained model the paper profile loads, as a random stand-in under the name the profile looks for:
    `folder` is the run's weights folder (`ARAS_WEIGHTS`), `torch_home` its `TORCH_HOME` (LPIPS' backbone)."""
    from aras.core import get_profile
    P, folder = get_profile("paper"), Path(folder)
    out = {}
    for c in P.captioning.captioners:
        if "path" not in c or (folder / c["path"]).exists(): continue
        save = save_tiny_lm if c["backend"] == "causal_lm" else save_tiny_vlm
        out[c["path"]] = save(folder / c["path"])
    out["clip"] = save_tiny_clip(folder / P.captioning.clip_model)
    if P.metrics.clip_model != P.captioning.clip_model: save_tiny_clip(folder / P.metrics.clip_model)
    out["dinov2"] = save_tiny_dinov2(folder / P.metrics.dinov2_model)
    out["inception"] = save_random_inception(folder)
    out["vgg19"] = save_random_torchvision("vgg19", folder / "vgg19.pth")
    out["lpips"] = save_random_lpips_backbone(torch_home, P.metrics.lpips_net)
    out["encoder"] = save_random_encoder(folder, P.segmentation.encoder, P.segmentation.encoder_weights)
    (folder / "README.txt").write_text("Random-weight stand-ins made by tests/tiny_models.py: code paths only, no results.\n")
    return out
