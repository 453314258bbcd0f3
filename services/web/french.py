"""French words of the dashboard (`services.web.i18n`): the pages' sentences, and the quality
rules' messages rebuilt from their English wording (pattern -> French, the named groups kept)."""

from __future__ import annotations

QUALITY_FR: dict[str, tuple[tuple[str, str], ...]] = {
    "missing_title": (
        (r"The objective needs a title\.", "L’objectif doit avoir un titre."),
        (r"The key result needs a title\.", "Le résultat clé doit avoir un titre."),
    ),
    "missing_period": (
        (
            r"The objective needs a period start date\.",
            "L’objectif doit avoir une date de début de période.",
        ),
        (
            r"The objective needs a period end date\.",
            "L’objectif doit avoir une date de fin de période.",
        ),
    ),
    "invalid_period": (
        (
            r"The period ends \((?P<end>[^)]*)\) before it starts \((?P<start>[^)]*)\), "
            r"or on that day\.",
            "La période se termine ({end}) avant de commencer ({start}), ou le même jour.",
        ),
    ),
    "no_key_results": (
        (
            r"The objective needs at least one key result saying how its success is measured\.",
            "L’objectif doit avoir au moins un résultat clé qui dit comment mesurer sa réussite.",
        ),
    ),
    "too_many_key_results": (
        (
            r"The objective has (?P<n>\d+) key results; more than (?P<max>\d+) dilutes focus\. "
            r"Keep the few that matter most\.",
            "L’objectif a {n} résultats clés ; au-delà de {max}, l’attention se disperse. "
            "Gardez les quelques-uns qui comptent le plus.",
        ),
    ),
    "long_period": (
        (
            r"The period is longer than a year; OKRs work best over a quarter or so\.",
            "La période dépasse un an ; les OKR fonctionnent mieux sur un trimestre environ.",
        ),
    ),
    "missing_target": (
        (
            r"The key result has no measurable target: say which value counts as success, "
            r"e\.g\. '\+30 %' or 'NPS 80'\.",
            "Le résultat clé n’a pas d’attente mesurable : dites quelle valeur vaut réussite, "
            "par exemple « +30 % » ou « NPS 80 ».",
        ),
        (
            r"The relative target (?P<rel>.+) only becomes a target once the baseline is known: "
            r"give the starting value\.",
            "La cible relative {rel} ne devient une cible qu’une fois la valeur de départ connue : "
            "indiquez-la.",
        ),
        (
            r"The range has no lower bound: give both ends of the range to land in\.",
            "La plage n’a pas de borne inférieure : donnez les deux bornes de la plage visée.",
        ),
        (
            r"The range has no upper bound: give both ends of the range to land in\.",
            "La plage n’a pas de borne supérieure : donnez les deux bornes de la plage visée.",
        ),
    ),
    "invalid_range": (
        (
            r"The range's lower bound \((?P<low>[^)]*)\) is above its upper bound "
            r"\((?P<high>[^)]*)\)\.",
            "La borne inférieure de la plage ({low}) dépasse sa borne supérieure ({high}).",
        ),
    ),
    "invalid_relative_target": (
        (
            r"The relative target (?P<rel>.+) cannot be read: write it like '\+30%', '-5 %' or "
            r"'\+1200'\.",
            "La cible relative {rel} est illisible : écrivez-la comme « +30% », « -5 % » ou "
            "« +1200 ».",
        ),
    ),
    "target_equals_baseline": (
        (
            r"The target equals the baseline \((?P<value>[^)]*)\): reaching it would change "
            r"nothing\.",
            "La cible est égale à la valeur de départ ({value}) : l’atteindre ne changerait rien.",
        ),
    ),
    "missing_metric": (
        (
            r"The key result has no metric or unit: say what is counted, e\.g\. 'units sold', "
            r"'%', 'NPS points' or 'minutes'\.",
            "Le résultat clé n’a ni indicateur ni unité : dites ce qui est compté, par exemple "
            "« unités vendues », « % », « points NPS » ou « minutes ».",
        ),
    ),
    "missing_baseline": (
        (
            r"The key result has no baseline: give the starting value progress is measured "
            r"from\.",
            "Le résultat clé n’a pas de valeur de départ : donnez celle à partir de laquelle la "
            "progression se mesure.",
        ),
    ),
    "missing_deadline": (
        (
            r"The key result has no deadline: say by when the target must be reached\.",
            "Le résultat clé n’a pas d’échéance : dites pour quand la cible doit être atteinte.",
        ),
    ),
    "activity_wording": (
        (
            r"'(?P<word>.+?)' describes an activity, not a result, and the title has no number: "
            r"state the outcome and how much of it, e\.g\. 'Reduce churn by 5 %'\.",
            "« {word} » décrit une activité, pas un résultat, et le titre ne contient aucun "
            "nombre : énoncez le résultat attendu et son ampleur, par exemple « Réduire le taux "
            "de désabonnement de 5 % ».",
        ),
    ),
    "deadline_after_period": (
        (
            r"The deadline \((?P<deadline>[^)]*)\) falls after the objective's period ends "
            r"\((?P<end>[^)]*)\)\.",
            "L’échéance ({deadline}) tombe après la fin de la période de l’objectif ({end}).",
        ),
    ),
    "direction_mismatch": (
        (
            r"The key result is an increase, but its target is below the baseline "
            r"\((?P<target>\S+) vs (?P<baseline>[^)]*)\)\.",
            "Le résultat clé est une augmentation, mais sa cible est sous la valeur de départ "
            "({target} contre {baseline}).",
        ),
        (
            r"The key result is a decrease, but its target is above the baseline "
            r"\((?P<target>\S+) vs (?P<baseline>[^)]*)\)\.",
            "Le résultat clé est une baisse, mais sa cible est au-dessus de la valeur de départ "
            "({target} contre {baseline}).",
        ),
    ),
    "relative_target_mismatch": (
        (
            r"The relative target (?P<rel>.+) means (?P<implied>\S+), but the target says "
            r"(?P<target>\S+); the target wins, the displayed text is misleading\.",
            "La cible relative {rel} donne {implied}, mais la cible indique {target} ; la cible "
            "l’emporte, le texte affiché est trompeur.",
        ),
    ),
    "milestone_values_ignored": (
        (
            r"A milestone is simply done \(1\) or not \(0\); its baseline and target are "
            r"ignored\.",
            "Un jalon est simplement atteint (1) ou non (0) ; sa valeur de départ et sa cible "
            "sont ignorées.",
        ),
    ),
}

FRENCH: dict[str, str] = {}
