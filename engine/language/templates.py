"""Task prompt templates: what the language model is asked to think about for each task.

Every template has the five parts of the Prompt4RE structure, written in our own words:
1. an expert role for the task;
2. a description of each input (the region text, and the image when there is one) and what to
   look at in it;
3. the core task;
4. a numbered list of analysis steps;
5. a request for a summary of the key features.

The template is the shared prefix of every region's prompt: the region's own description follows
it (see `engine/language/models.py`, which computes the prefix once and reuses it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class TaskTemplate:
    """The task-specific parts of a template; the shared parts are filled in by `render`."""

    role: str  # who the model is asked to be
    quantity: str  # what is estimated, in words ("the number of reported crimes")
    signals: str  # what in the region data matters for this quantity
    image_signals: str  # what to look at in an image of the region
    steps: tuple[str, ...]  # the analysis steps, in order


TEXT_INPUT = (
    "Region text: a factual record of one urban region. It gives the region's id and name when "
    "known, the latitude and longitude of its centre, its area in square kilometres, the number "
    "of points of interest (POIs) with the largest categories and their shares, the land-use mix, "
    "taxi or other trips leaving and entering the region with the strongest destinations, and "
    "other measured values. Read the counts relative to the area and the shares relative to each "
    "other; compare the trip volume in and out."
)

IMAGE_INPUT = (
    "Image: one aerial or satellite view of the region, north up. {image_signals}"
)

SUMMARY = (
    "Finish with a short summary of the key features of this region that matter for {quantity}: "
    "name the strongest signals, say whether they point to a high or a low value compared with a "
    "typical region of the city, and how confident the evidence is."
)

TASKS: dict[str, TaskTemplate] = {
    "crime": TaskTemplate(
        role="You are an urban criminologist who studies how the built environment, land use and "
        "the daily movement of people shape where crime happens in a city.",
        quantity="the number of reported crimes",
        signals="Crime follows opportunity and guardianship: dense nightlife, bars, retail and "
        "transit hubs bring many potential targets and offenders together; large flows of "
        "visitors raise exposure; mixed residential and commercial land use changes who watches "
        "the street; vacant or industrial land lowers natural surveillance.",
        image_signals="Look at building density, street layout, open or vacant lots, parking, "
        "parks and how busy the streets appear.",
        steps=(
            "Locate the region in the city from its coordinates and judge how central it is.",
            "Read the POI mix: count nightlife, food, retail and transport places and compare "
            "them with the region's area.",
            "Read the land use: how much is commercial, residential, industrial or open space.",
            "Read the trips: how many people arrive and leave, and whether the region is a "
            "destination for the rest of the city.",
            "Weigh opportunity (targets, crowds) against guardianship (residents, eyes on the "
            "street) and judge the expected crime level.",
        ),
    ),
    "check_in": TaskTemplate(
        role="You are an expert in location-based social media and urban mobility, who knows "
        "which places people visit and share.",
        quantity="the number of social-media check-ins",
        signals="Check-ins concentrate where people go for leisure, food, shopping, culture and "
        "travel; attractive destinations receive many trips from across the city; purely "
        "residential or industrial areas see few check-ins.",
        image_signals="Look for landmarks, plazas, parks, waterfronts, large commercial blocks "
        "and crowded streets.",
        steps=(
            "Locate the region and judge whether it lies in a popular part of the city.",
            "Read the POI mix: count restaurants, cafes, bars, shops, venues and attractions.",
            "Read the land use: how much is commercial, recreational or residential.",
            "Read the incoming trips: a strong destination draws visitors who check in.",
            "Combine attractiveness, accessibility and density into an expected check-in level.",
        ),
    ),
    "service_call": TaskTemplate(
        role="You are an urban operations analyst who studies 311 non-emergency service "
        "requests: noise, sanitation, street conditions, housing and building complaints.",
        quantity="the number of 311 service calls",
        signals="Service calls grow with the number of residents and visitors, with dense and "
        "old housing, nightlife (noise), heavy traffic and construction; quiet parks and "
        "single-use commercial blocks produce fewer calls.",
        image_signals="Look at housing density, building age and condition, construction, "
        "traffic and street cleanliness.",
        steps=(
            "Locate the region and judge how densely it is lived in and used.",
            "Read the land use: residential and mixed-use areas generate most complaints.",
            "Read the POI mix: nightlife and food places bring noise and sanitation issues.",
            "Read the trips: heavy traffic in and out brings street and parking complaints.",
            "Combine residents, activity and nuisance sources into an expected call volume.",
        ),
    ),
    "income": TaskTemplate(
        role="You are an urban economist who studies how household income varies between "
        "neighbourhoods of a city.",
        quantity="the median household income",
        signals="High-income areas tend to have upscale services, low density of cheap "
        "amenities, parks and waterfront, and good access to jobs; low-income areas have more "
        "affordable food, fewer high-end services and more public housing or industry.",
        image_signals="Look at building types and size, greenery, parks, street quality and the "
        "spacing of buildings.",
        steps=(
            "Locate the region and recall what is known about that part of the city.",
            "Read the POI mix for signs of affluence or affordability.",
            "Read the land use: residential, commercial, industrial and open space.",
            "Read the trips: commuting patterns hint at jobs and residents.",
            "Combine these signals into an expected income level.",
        ),
    ),
    "carbon": TaskTemplate(
        role="You are an environmental scientist who estimates urban carbon emissions from "
        "buildings, transport and economic activity.",
        quantity="the carbon emission",
        signals="Emissions rise with floor area and energy use of buildings, with commercial "
        "and industrial activity, and with road traffic; parks, water and low-density housing "
        "emit less.",
        image_signals="Look at roof area, building height and density, roads and traffic, "
        "industrial sites and vegetation.",
        steps=(
            "Locate the region and judge its density and size.",
            "Read the land use: commercial and industrial areas consume the most energy.",
            "Read the POI mix as a measure of economic activity.",
            "Read the trips as a measure of transport emissions.",
            "Combine building, activity and transport signals into an expected emission level.",
        ),
    ),
    "population": TaskTemplate(
        role="You are a demographer who estimates how many people live in each part of a city.",
        quantity="the resident population",
        signals="Population follows residential floor area: dense housing, schools, groceries "
        "and daily services point to many residents; offices, industry, parks and water point "
        "to few; trips that leave in the morning come from where people live.",
        image_signals="Look at residential buildings, their height and density, and the share of "
        "non-residential land.",
        steps=(
            "Locate the region and judge its size and centrality.",
            "Read the land use: how much is residential.",
            "Read the POI mix for daily services that serve residents.",
            "Read the trips: outgoing commuter flows point to residents.",
            "Combine housing, services and flows into an expected population.",
        ),
    ),
}

# Target names (lower case, separators removed) that map to each task.
_ALIASES = {
    "crime": ("crime", "crimes", "crimecount", "crimecounts", "crimerate"),
    "check_in": ("checkin", "checkins", "checkincount", "checkincounts", "checkcounts",
                 "check", "checks", "visits"),
    "service_call": ("servicecall", "servicecalls", "servicecallcount", "servicecallcounts",
                     "311", "311calls", "complaints"),
    "income": ("income", "incomes", "incomecount", "incomecounts", "medianincome",
               "householdincome", "medianhouseholdincome"),
    "carbon": ("carbon", "carboncount", "carboncounts", "carbonemission", "carbonemissions",
               "co2", "emission", "emissions"),
    "population": ("population", "pop", "pop2020", "residents", "inhabitants", "popcount",
                   "totalpopulation"),
}


def task_kind(target_name: str) -> str | None:
    """The task a target name refers to ("crime", "check_in", ...), or None for a generic one."""
    key = re.sub(r"[^a-z0-9]", "", target_name.lower())
    for kind, aliases in _ALIASES.items():
        if key in aliases:
            return kind
    words = set(re.split(r"[^a-z0-9]+", target_name.lower()))
    for kind, aliases in _ALIASES.items():
        if words & set(aliases):
            return kind
    return None


def task_template(target_name: str, description: str | None = None, has_image: bool = False) -> str:
    """The task prompt for a target: a known task's template, or a generic one built from the
    target's name and the user's description of it."""
    kind = task_kind(target_name)
    template = TASKS[kind] if kind else _generic(target_name, description)
    if kind and description:
        # A user's own words about the target sharpen a known task too.
        template = TaskTemplate(
            role=template.role, quantity=template.quantity,
            signals=template.signals + f" The user describes the target as: {description.strip()}",
            image_signals=template.image_signals, steps=template.steps,
        )
    return render(template, has_image=has_image)


def render(template: TaskTemplate, has_image: bool = False) -> str:
    """The full prompt text: role, inputs, core task, steps, summary request."""
    inputs = [TEXT_INPUT]
    if has_image:
        inputs.append(IMAGE_INPUT.format(image_signals=template.image_signals))
    steps = list(template.steps)
    if has_image:
        steps.insert(1, "Look at the image and note what it shows about the region.")
    lines = [
        template.role,
        "",
        "Inputs:",
        *[f"- {text}" for text in inputs],
        "",
        f"Task: analyse the region below and reason about {template.quantity} in it. "
        f"{template.signals}",
        "",
        "Steps:",
        *[f"{k}. {step}" for k, step in enumerate(steps, start=1)],
        "",
        SUMMARY.format(quantity=template.quantity),
        "",
        "Region:",
        "",
    ]
    return "\n".join(lines)


def _generic(target_name: str, description: str | None) -> TaskTemplate:
    """A template for any target, from its field name and an optional description."""
    words = re.sub(r"[_\-.]+", " ", target_name).strip() or "the target value"
    quantity = f"the value of '{words}'"
    signals = (
        f"The user describes it as: {description.strip()}" if description and description.strip()
        else "No description was given: infer from the name what the value measures and which "
        "urban characteristics drive it."
    )
    return TaskTemplate(
        role=f"You are an urban data analyst who explains how '{words}' varies across the "
        "regions of a city from what is located in each region and how people move.",
        quantity=quantity,
        signals=signals + " Consider density, the mix of places, land use and the flows of "
        "people in and out.",
        image_signals="Look at buildings, streets, greenery and water, and any feature that "
        f"relates to '{words}'.",
        steps=(
            "Locate the region and judge how central and how dense it is.",
            f"Read the POI mix and decide which categories relate to '{words}'.",
            "Read the land use and the other measured values.",
            "Read the trips in and out and what they say about the region's role in the city.",
            f"Combine these signals into an expected level of '{words}'.",
        ),
    )
