"""tinyworld: seeded procedural clips (one shape, one colour, one motion) with captions,
and an automatic checker that tells whether a clip matches its prompt."""
from .world import (BACKGROUNDS, BACKGROUND_WORDS, COLOURS, MOTIONS, SHAPES, Clip, ClipSpec,
                    MotionDef, ObjectSpec, ObjectTrack, Pose, ShapeDef, clip_for_index,
                    reference_image, register_motion, register_shape, render, sample_clip,
                    sample_spec)
from .captions import (TEMPLATES, all_caption_texts, all_captions, canonical_caption,
                       parse_caption, sample_caption)

__all__ = [
    "BACKGROUNDS", "BACKGROUND_WORDS", "COLOURS", "MOTIONS", "SHAPES", "Clip", "ClipSpec",
    "MotionDef", "ObjectSpec", "ObjectTrack", "Pose", "ShapeDef", "clip_for_index",
    "reference_image", "register_motion", "register_shape", "render", "sample_clip",
    "sample_spec", "TEMPLATES", "all_caption_texts", "all_captions", "canonical_caption",
    "parse_caption", "sample_caption",
]
