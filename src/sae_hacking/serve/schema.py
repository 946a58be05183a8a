"""The JSON of the highlight API, as pydantic models: the server documents its answers with them
(``/openapi.json``) and the client (``sae-hacking highlight``) checks every answer against them
before it uses a single field. Imports pydantic only (no torch, no FastAPI), so the client stays
light.

The answer models are strict: a server that sends ``"3"`` for a latent index, ``"NaN"`` or
``NaN`` for an activation, or ``5`` for the token list is not a highlight server, and the client
says so in one line instead of rendering (or naming files after) what it sent.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ActivationsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, description="the text to highlight")
    sae_release: str = Field(description="SAELens release, or an SAE path under --sae-dir")
    sae_id: str | None = Field(None, description="SAE id in the release (a path: a sub-path)")
    feature_idx: int | None = Field(None, ge=0, description="the latent to highlight by")
    top_k: int = Field(5, ge=1, le=50, description="latents listed per token and per prompt")


class Answer(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False)


class SAEInfoOut(Answer):
    release: str
    sae_id: str | None
    hook: str
    d_sae: int = Field(ge=1)
    neuronpedia_id: str | None = None


class FeatureOut(Answer):
    index: int = Field(ge=0)
    explanation: str
    url: str | None
    evidence_url: str | None = Field(
        None, description="its section of the evidence pages (serve --evidence), from the root"
    )


class TokenLatent(Answer):
    index: int = Field(ge=0)
    value: float


class TopLatent(Answer):
    index: int = Field(ge=0)
    max: float
    explanation: str
    url: str | None
    evidence_url: str | None = Field(
        None, description="its section of the evidence pages (serve --evidence), from the root"
    )


class ActivationsResponse(Answer):
    sae: SAEInfoOut
    tokens: list[str]
    feature: FeatureOut | None = Field(description="the latent asked for; null without one")
    activations: list[float] | None = Field(
        description="that latent's activation at each token; null without a latent"
    )
    top_per_token: list[list[TokenLatent]]
    top_latents: list[TopLatent]
    max_activation: float = Field(
        ge=0, description="the top of the colour scale; 0 when nothing fires"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ActivationsResponse:
        """The lists describe the same tokens and every index is a latent of the SAE: the
        client zips them and links to them."""
        n = len(self.tokens)
        if len(self.top_per_token) != n:
            raise ValueError(f"top_per_token has {len(self.top_per_token)} entries for {n} tokens")
        if (self.feature is None) != (self.activations is None):
            raise ValueError("feature and activations must be both given or both null")
        if self.activations is not None and len(self.activations) != n:
            raise ValueError(f"activations has {len(self.activations)} values for {n} tokens")
        indices = [t.index for t in self.top_latents]
        indices += [t.index for top in self.top_per_token for t in top]
        if self.feature is not None:
            indices.append(self.feature.index)
        if indices and max(indices) >= self.sae.d_sae:
            raise ValueError(f"latent {max(indices)} is out of range for d_sae {self.sae.d_sae}")
        return self


class SAEsResponse(Answer):
    loaded: list[SAEInfoOut]
    max_saes: int
    sae_dirs: list[str]


class HealthResponse(Answer):
    status: str
    model: str


class ErrorResponse(BaseModel):
    detail: str = Field(description="one sentence saying what was wrong")
